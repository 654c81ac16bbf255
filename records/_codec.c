/* records._codec: a record's JSON bytes (records.codec.to_json) written directly, one C call a record.
 *
 * to_json builds the record's dict (a generated function, records.codec._fast_encoder) and hands it to
 * orjson; every Kafka message pays for both. Here each field is read from its slot and written into
 * one buffer: plain ASCII strings without anything to escape, ints that fit in 64 bits, None and
 * booleans directly; U256 ints as their decimal text in quotes; Decimals as format(value, "f") in quotes.
 * Any other value (a string with something to escape or outside ASCII, a bigger int, a nested record, a
 * subclass, a wrong type) is written by orjson itself, from what the field's Python encoder makes of it:
 * orjson writes a value the same wherever it sits, so the bytes are orjson's whatever the value. The
 * unit tests compare the two on every record kind and on generated values (tests/unit/test_records.py).
 *
 * Optional: built by `make install` (setuptools ext-modules in pyproject.toml); records.codec falls back
 * to dict + orjson when it is missing. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <structmember.h>

#include "_buffer.h"

enum { PLAIN = 0, BIG = 1, DECIMAL = 2, SEQUENCE = 3, OTHER = 4 };

typedef struct {
    PyObject *name;     /* the field's name (str): error messages, unset slots */
    PyObject *key;      /* bytes: `"name":`, with the comma before it for every field but the first */
    Py_ssize_t offset;  /* the slot's offset in the object */
    int kind;
    int optional;       /* the hint is `X | None`: None is written null */
    PyObject *encode;   /* the field's Python encoder (None for PLAIN: the value as it is) */
} Field;

typedef struct {
    PyObject_VAR_HEAD
    vectorcallfunc vectorcall;
    PyTypeObject *cls;
    PyObject *prefix;   /* bytes: `{"type":"...","version":N,"data":{` */
    PyObject *dumps;    /* orjson.dumps */
    PyObject *decimal;  /* decimal.Decimal */
    PyObject *format_f; /* "f" */
    Field fields[1];
} Encoder;

/* orjson.dumps(value), appended */
static int put_dumped(Buffer *b, Encoder *e, PyObject *value) {
    PyObject *dumped = PyObject_CallOneArg(e->dumps, value);
    if (dumped == NULL) return -1;
    int rc = buffer_put(b, PyBytes_AS_STRING(dumped), PyBytes_GET_SIZE(dumped));
    Py_DECREF(dumped);
    return rc;
}

/* Whether any of the 8 bytes in x needs escaping in JSON: a control character, '"' or '\\'
 * (the "hasless" and "haszero" bit hacks, exact as a yes/no answer for bytes below 0x80: an ASCII str). */
static inline int needs_escape8(uint64_t x) {
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t control = (x - ones * 0x20) & ~x;
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
    return (((control | ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash)) & high) != 0);
}

/* A str as a JSON string, when it is ASCII with nothing to escape (1); 0 when orjson must write it. */
static int put_plain_str(Buffer *b, PyObject *s) {
    if (!PyUnicode_IS_COMPACT_ASCII(s)) return 0;
    const char *text = (const char *)PyUnicode_DATA(s);
    Py_ssize_t size = PyUnicode_GET_LENGTH(s), i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t x;
        memcpy(&x, text + i, 8);
        if (needs_escape8(x)) return 0;
    }
    for (; i < size; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == '"' || c == '\\') return 0;
    }
    if (buffer_reserve(b, size + 2) < 0) return -1;
    char *at = b->data + b->size;
    at[0] = '"';
    memcpy(at + 1, text, size);
    at[size + 1] = '"';
    b->size += size + 2;
    return 1;
}

/* An exact int that fits in 64 bits as decimal digits (1), quoted or not; 0 otherwise. */
static int put_int64(Buffer *b, PyObject *v, int quoted) {
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) return 0;
    if (n == -1 && PyErr_Occurred()) return -1;
    char text[24];
    char *end = text + sizeof text, *at = end;
    if (quoted) *--at = '"';
    unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    do {
        *--at = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (n < 0) *--at = '-';
    if (quoted) *--at = '"';
    return buffer_put(b, at, end - at) < 0 ? -1 : 1;
}

/* str(value) of a Decimal when it is plain digits with a sign or a point: then it equals format(value, "f")
 * (the scientific form only differs where str writes an exponent; NaN and infinities go to format). */
static PyObject *decimal_text(Encoder *e, PyObject *v) {
    PyObject *text = PyObject_Str(v);
    if (text == NULL || !PyUnicode_IS_COMPACT_ASCII(text)) return text;
    const char *at = (const char *)PyUnicode_DATA(text);
    for (Py_ssize_t i = 0, size = PyUnicode_GET_LENGTH(text); i < size; i++) {
        if ((at[i] < '0' || at[i] > '9') && at[i] != '-' && at[i] != '.') {
            Py_DECREF(text);
            return PyObject_Format(v, e->format_f);
        }
    }
    return text;
}

static int put_field(Buffer *b, Encoder *e, Field *f, PyObject *v) {
    int done = 0;
    if (v == Py_None && f->optional) return buffer_put(b, "null", 4); /* the Python encoder's None -> None */
    switch (f->kind) {
    case PLAIN:
        if (v == Py_None) return buffer_put(b, "null", 4);
        if (v == Py_True) return buffer_put(b, "true", 4);
        if (v == Py_False) return buffer_put(b, "false", 5);
        if (PyUnicode_CheckExact(v))
            done = put_plain_str(b, v);
        else if (PyLong_CheckExact(v))
            done = put_int64(b, v, 0);
        if (done) return done < 0 ? -1 : 0;
        return put_dumped(b, e, v);
    case BIG:
        if (PyLong_CheckExact(v)) {
            done = put_int64(b, v, 1);
            if (done) return done < 0 ? -1 : 0;
            PyObject *text = PyObject_Str(v); /* str(value), as the Python encoder */
            if (text == NULL) return -1;
            done = put_plain_str(b, text);
            Py_DECREF(text);
            if (done) return done < 0 ? -1 : 0;
        }
        break;
    case DECIMAL:
        if ((PyObject *)Py_TYPE(v) == e->decimal) {
            PyObject *text = decimal_text(e, v); /* format(value, "f"), as the Python encoder */
            if (text == NULL) return -1;
            done = PyUnicode_CheckExact(text) ? put_plain_str(b, text) : 0;
            Py_DECREF(text);
            if (done) return done < 0 ? -1 : 0;
        }
        break;
    case SEQUENCE: /* tuple[X, ...]: the Python encoder makes a list of the items */
        if (PyTuple_CheckExact(v) && PyTuple_GET_SIZE(v) == 0) return buffer_put(b, "[]", 2);
        break;
    }
    /* what the Python encoder makes of it, written by orjson */
    PyObject *encoded = PyObject_CallOneArg(f->encode, v);
    if (encoded == NULL) return -1;
    int rc = put_dumped(b, e, encoded);
    Py_DECREF(encoded);
    return rc;
}

static PyObject *encoder_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Encoder *e = (Encoder *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "an encoder takes one record");
        return NULL;
    }
    PyObject *record = args[0];
    if (Py_TYPE(record) != e->cls) {
        PyErr_Format(PyExc_TypeError, "an encoder of %s records, given %s", e->cls->tp_name,
                     Py_TYPE(record)->tp_name);
        return NULL;
    }
    char small[2048]; /* most records fit: no allocation but the bytes object's */
    Buffer b;
    buffer_init_inline(&b, small, sizeof small);
    if (buffer_put(&b, PyBytes_AS_STRING(e->prefix), PyBytes_GET_SIZE(e->prefix)) < 0) goto fail;
    for (Py_ssize_t i = 0; i < Py_SIZE(e); i++) {
        Field *f = &e->fields[i];
        if (buffer_put(&b, PyBytes_AS_STRING(f->key), PyBytes_GET_SIZE(f->key)) < 0) goto fail;
        PyObject *v = *(PyObject **)((char *)record + f->offset);
        if (v == NULL) { /* an unset slot: the AttributeError getattr raises */
            v = PyObject_GetAttr(record, f->name);
            Py_XDECREF(v);
            if (!PyErr_Occurred()) PyErr_Format(PyExc_AttributeError, "%U", f->name);
            goto fail;
        }
        if (put_field(&b, e, f, v) < 0) goto fail;
    }
    if (buffer_put(&b, "}}", 2) < 0) goto fail;
    return buffer_finish(&b);
fail:
    buffer_free(&b);
    return NULL;
}

static void encoder_dealloc(PyObject *self) {
    Encoder *e = (Encoder *)self;
    PyObject_GC_UnTrack(self);
    for (Py_ssize_t i = 0; i < Py_SIZE(e); i++) {
        Py_XDECREF(e->fields[i].name);
        Py_XDECREF(e->fields[i].key);
        Py_XDECREF(e->fields[i].encode);
    }
    Py_XDECREF(e->cls);
    Py_XDECREF(e->prefix);
    Py_XDECREF(e->dumps);
    Py_XDECREF(e->decimal);
    Py_XDECREF(e->format_f);
    PyObject_GC_Del(self);
}

static int encoder_traverse(PyObject *self, visitproc visit, void *arg) {
    Encoder *e = (Encoder *)self;
    for (Py_ssize_t i = 0; i < Py_SIZE(e); i++) Py_VISIT(e->fields[i].encode);
    Py_VISIT(e->cls);
    Py_VISIT(e->dumps);
    Py_VISIT(e->decimal);
    return 0;
}

static PyTypeObject EncoderType;

/* Encoder(cls, prefix, fields, dumps, decimal): fields a tuple of (name, key bytes, kind, optional, encoder),
 * each name an object slot of cls. */
static PyObject *encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *cls, *prefix, *fields, *dumps, *decimal;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Encoder takes positional arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!OO:Encoder", &PyType_Type, &cls, &PyBytes_Type, &prefix,
                          &PyTuple_Type, &fields, &dumps, &decimal))
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(fields);
    Encoder *e = PyObject_GC_NewVar(Encoder, type, count);
    if (e == NULL) return NULL;
    memset(e->fields, 0, count * sizeof(Field));
    e->vectorcall = encoder_call;
    e->cls = (PyTypeObject *)Py_NewRef(cls);
    e->prefix = Py_NewRef(prefix);
    e->dumps = Py_NewRef(dumps);
    e->decimal = Py_NewRef(decimal);
    e->format_f = PyUnicode_InternFromString("f");
    if (e->format_f == NULL) goto fail;
    for (Py_ssize_t i = 0; i < count; i++) {
        Field *f = &e->fields[i];
        PyObject *name, *key, *encode;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(fields, i), "UO!ipO:field", &name, &PyBytes_Type, &key, &f->kind,
                              &f->optional, &encode))
            goto fail;
        f->name = Py_NewRef(name);
        f->key = Py_NewRef(key);
        f->encode = Py_NewRef(encode);
        if (f->kind < PLAIN || f->kind > OTHER) {
            PyErr_Format(PyExc_ValueError, "field %U: unknown kind %d", name, f->kind);
            goto fail;
        }
        PyObject *descr = PyObject_GetAttr(cls, name);
        if (descr == NULL) goto fail;
        int slot = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                   ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX &&
                   PyType_IsSubtype((PyTypeObject *)cls, ((PyMemberDescrObject *)descr)->d_common.d_type);
        if (slot) f->offset = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!slot) {
            PyErr_Format(PyExc_TypeError, "%s.%U is not an object slot", ((PyTypeObject *)cls)->tp_name, name);
            goto fail;
        }
    }
    PyObject_GC_Track(e);
    return (PyObject *)e;
fail:
    Py_DECREF(e);
    return NULL;
}

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "records._codec.Encoder",
    .tp_basicsize = offsetof(Encoder, fields),
    .tp_itemsize = sizeof(Field),
    .tp_dealloc = encoder_dealloc,
    .tp_vectorcall_offset = offsetof(Encoder, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Encoder(cls, prefix, fields, dumps, decimal)(record) -> the record's JSON bytes",
    .tp_traverse = encoder_traverse,
    .tp_new = encoder_new,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "records._codec", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__codec(void) {
    if (PyType_Ready(&EncoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
