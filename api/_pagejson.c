/* api._pagejson: a page of rows as its JSON array of objects, written in one C call.
 *
 * A REST list page of 100 DEX trades is 100 asyncpg Records of 23 columns. Turning each into a dict
 * (``dict(zip(names, row))``) and handing the list to orjson cost the API ~0.25 CPU-ms a page, a third
 * of the server's part of the page; here each value is read from the row (the sequence protocol:
 * asyncpg Records and tuples alike) and written straight into one buffer.
 *
 * objects(keys, rows, count) -> bytes
 *     keys: a tuple of ``count`` bytes, the text before each value: ``{"name":`` for the first column,
 *     ``,"name":`` for the others (the caller encodes them once per kind). rows: a list of sequences
 *     with at least ``count`` items (later items, like a one-statement page's head columns, are not
 *     read). The answer is ``[{...},{...}]``, byte for byte what ``orjson.dumps`` writes for the list of
 *     dicts: a str as orjson writes one (UTF-8; ``"``, ``\`` and the control characters escaped,
 *     ``\b \t \n \f \r`` short, the others ``\u00xx``), an int in -2^63..2^64-1 in decimal, None as
 *     null, True/False. Any other value (a float, a subclass, a bigger int, a nested value) raises
 *     TypeError, and the caller writes that page with dict + orjson instead: the answer is then orjson's
 *     by construction. Unit tests compare the two (tests/unit/test_api_pagejson.py).
 *
 * Optional: built by `make install` (setuptools ext-modules in pyproject.toml); api.query falls back to
 * dict + orjson when it is missing. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "_buffer.h"

/* 1 where a byte must be escaped in a JSON string: the control characters, '"' and '\' */
static unsigned char needs_escape[256];

static void init_escapes(void) {
    for (int c = 0; c < 0x20; c++) needs_escape[c] = 1;
    needs_escape['"'] = 1;
    needs_escape['\\'] = 1;
}

/* the index of the first byte of text[from..size) that must be escaped, or size: eight bytes a step
 * (a byte below 0x20, or equal to '"' or '\'; bytes >= 0x80 never match) */
static Py_ssize_t first_escape(const char *text, Py_ssize_t from, Py_ssize_t size) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    Py_ssize_t i = from;
    for (; i + 8 <= size; i += 8) {
        uint64_t x;
        memcpy(&x, text + i, 8);
        uint64_t quote = x ^ (ones * '"'), slash = x ^ (ones * '\\');
        uint64_t hit = ((x - ones * 0x20) & ~x) | ((quote - ones) & ~quote) | ((slash - ones) & ~slash);
        if (hit & highs) break; /* one of these 8 bytes (or a false alarm): bytewise below */
    }
    for (; i < size; i++) {
        if (needs_escape[(unsigned char)text[i]]) return i;
    }
    return size;
}

static int put_string(Buffer *b, PyObject *text) {
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size); /* fails on lone surrogates, as orjson */
    if (utf8 == NULL) return -1;
    /* the worst case: every byte as \u00xx, and the two quotes */
    if (size > (PY_SSIZE_T_MAX - 2) / 6) {
        PyErr_NoMemory();
        return -1;
    }
    if (buffer_reserve(b, size * 6 + 2) < 0) return -1;
    char *out = b->data + b->size;
    *out++ = '"';
    Py_ssize_t start = 0;
    for (Py_ssize_t i = first_escape(utf8, 0, size); i < size; i = first_escape(utf8, start, size)) {
        unsigned char c = (unsigned char)utf8[i];
        memcpy(out, utf8 + start, i - start);
        out += i - start;
        start = i + 1;
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\t': *out++ = 't'; break;
        case '\n': *out++ = 'n'; break;
        case '\f': *out++ = 'f'; break;
        case '\r': *out++ = 'r'; break;
        default: {
            static const char hex[] = "0123456789abcdef";
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
        }
    }
    memcpy(out, utf8 + start, size - start);
    out += size - start;
    *out++ = '"';
    b->size = out - b->data;
    return 0;
}

/* the decimal digits of n, written backwards from end; returns where they start */
static char *digits_of(unsigned long long n, char *end) {
    do {
        *--end = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    return end;
}

/* 0 written, 1 not an int this writes (the caller falls back), -1 error */
static int put_int(Buffer *b, PyObject *value) {
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    char text[24];
    char *end = text + sizeof text, *start;
    if (overflow == 0) {
        if (number == -1 && PyErr_Occurred()) return -1;
        if (number < 0) {
            start = digits_of(0ULL - (unsigned long long)number, end);
            *--start = '-';
        } else {
            start = digits_of((unsigned long long)number, end);
        }
    } else if (overflow > 0) {
        unsigned long long big = PyLong_AsUnsignedLongLong(value);
        if (big == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear(); /* beyond 2^64-1: orjson refuses it; the caller's fallback says so */
            return 1;
        }
        start = digits_of(big, end);
    } else {
        return 1;
    }
    return buffer_put(b, start, end - start);
}

/* 0 written, 1 a value this does not write, -1 error */
static int put_value(Buffer *b, PyObject *value) {
    if (PyUnicode_CheckExact(value)) return put_string(b, value);
    if (value == Py_None) return buffer_put(b, "null", 4);
    if (PyLong_CheckExact(value)) return put_int(b, value);
    if (value == Py_True) return buffer_put(b, "true", 4);
    if (value == Py_False) return buffer_put(b, "false", 5);
    return 1;
}

static PyObject *objects(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "objects(keys, rows, count)");
        return NULL;
    }
    PyObject *keys = args[0], *rows = args[1];
    Py_ssize_t count = PyLong_AsSsize_t(args[2]);
    if (count == -1 && PyErr_Occurred()) return NULL;
    if (!PyTuple_CheckExact(keys) || PyTuple_GET_SIZE(keys) != count || count < 1) {
        PyErr_SetString(PyExc_TypeError, "keys: a tuple of count bytes");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(keys, i))) {
            PyErr_SetString(PyExc_TypeError, "keys: a tuple of count bytes");
            return NULL;
        }
    }
    if (!PyList_CheckExact(rows)) {
        PyErr_SetString(PyExc_TypeError, "rows: a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    Buffer b;
    buffer_init(&b);
    if (buffer_grow(&b, 2 + (n < 1 << 20 ? n : 1 << 20) * 1024) < 0) return NULL;
    b.data[b.size++] = '[';
    /* a row that is not a tuple or asyncpg Record may run Python code in its __getitem__, which may
     * change the list: its size is read again for each row and the row held while it is written */
    PyObject *row = NULL;
    for (Py_ssize_t r = 0; r < PyList_GET_SIZE(rows); r++) {
        Py_XSETREF(row, Py_NewRef(PyList_GET_ITEM(rows, r)));
        if (r && buffer_put(&b, ",", 1) < 0) goto fail;
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *key = PyTuple_GET_ITEM(keys, i);
            if (buffer_put(&b, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)) < 0) goto fail;
            PyObject *value = PySequence_GetItem(row, i); /* a new reference */
            if (value == NULL) goto fail;
            int rc = put_value(&b, value);
            Py_DECREF(value);
            if (rc < 0) goto fail;
            if (rc > 0) {
                PyErr_Format(PyExc_TypeError, "row %zd column %zd: not a value written here", r, i);
                goto fail;
            }
        }
        if (buffer_put(&b, "}", 1) < 0) goto fail;
    }
    Py_CLEAR(row); /* cleared: the failure below goes to fail, which releases it too */
    if (buffer_put(&b, "]", 1) < 0) goto fail;
    return buffer_finish(&b);
fail:
    Py_XDECREF(row);
    buffer_free(&b);
    return NULL;
}

static PyMethodDef methods[] = {
    {"objects", (PyCFunction)(void (*)(void))objects, METH_FASTCALL,
     "objects(keys, rows, count) -> bytes: the rows' first count items as a JSON array of objects"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "api._pagejson", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__pagejson(void) {
    init_escapes();
    return PyModule_Create(&module);
}
