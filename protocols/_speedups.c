/* protocols._speedups: a positional maker for a frozen slots dataclass (DexTrade, DexLiquidity), the record
 * construction of the log -> record path. protocols.trades.slot_filler's Python maker stores each of a
 * DexTrade's 23 fields with one interpreter instruction and then reassigns __class__; here the object is
 * allocated and its slots filled directly, one C call a record, and left untracked by the cycle collector when
 * it refers to no tracked object (see make()).
 * Optional: built by `make install` (setuptools ext-modules in pyproject.toml); protocols.trades falls back
 * to its Python maker when it is missing, and tests/unit/test_decode_makers.py checks both give equal
 * records. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* The maker's bound self: a tuple (cls, offsets) with offsets a bytes object of Py_ssize_t, one a field. */
static PyObject *make(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    PyTypeObject *cls = (PyTypeObject *)PyTuple_GET_ITEM(self, 0);
    PyObject *offsets = PyTuple_GET_ITEM(self, 1);
    Py_ssize_t count = PyBytes_GET_SIZE(offsets) / (Py_ssize_t)sizeof(Py_ssize_t);
    if (nargs != count) {
        PyErr_Format(PyExc_TypeError, "%s maker takes %zd positional arguments (%zd given)", cls->tp_name,
                     count, nargs);
        return NULL;
    }
    PyObject *obj = cls->tp_alloc(cls, 0);
    if (obj == NULL) return NULL;
    const Py_ssize_t *at = (const Py_ssize_t *)PyBytes_AS_STRING(offsets);
    int holds_tracked = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        *(PyObject **)((char *)obj + at[i]) = Py_NewRef(args[i]);
        holds_tracked |= PyObject_GC_IsTracked(args[i]);
    }
    /* CPython's own rule for tuples (_PyTuple_MaybeUntrack): an object that refers to no tracked object
     * cannot be part of a reference cycle, so the cycle collector need not see it. A DexTrade holds ints,
     * strings, Decimals and None only; untracked, the records a batch accumulates are never traversed by
     * the collections the batch's allocations trigger (measured: a quarter of the log -> DexTrade path).
     * Its fields are frozen, so it stays acyclic; a record holding a container stays tracked. */
    if (!holds_tracked) PyObject_GC_UnTrack(obj);
    return obj;
}

static PyMethodDef make_def = {"make", (PyCFunction)(void (*)(void))make, METH_FASTCALL,
                               "make(*values): a record with these field values, in field order"};

/* slot_maker(cls, names) -> make: every name must be an object slot of cls itself (T_OBJECT_EX). */
static PyObject *slot_maker(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyType_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "slot_maker(cls, names: tuple)");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)args[0];
    PyObject *names = args[1];
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    PyObject *offsets = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(Py_ssize_t));
    if (offsets == NULL) return NULL;
    Py_ssize_t *at = (Py_ssize_t *)PyBytes_AS_STRING(offsets);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *descr = PyUnicode_Check(name) ? PyDict_GetItemWithError(type->tp_dict, name) : NULL;
        /* the descriptor's own class must be type: a member of another class assigned as an attribute of
         * type has an offset in that class's layout, outside type's objects */
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) || PyDescr_TYPE(descr) != type ||
            ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%s.%R is not an object slot", type->tp_name, name);
            Py_DECREF(offsets);
            return NULL;
        }
        at[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        for (Py_ssize_t j = 0; j < i; j++) {
            if (at[j] == at[i]) { /* make() would store twice, leaking the first value */
                PyErr_Format(PyExc_TypeError, "%s.%U is named twice", type->tp_name, name);
                Py_DECREF(offsets);
                return NULL;
            }
        }
    }
    PyObject *self = PyTuple_Pack(2, (PyObject *)type, offsets);
    Py_DECREF(offsets);
    if (self == NULL) return NULL;
    PyObject *maker = PyCFunction_New(&make_def, self);
    Py_DECREF(self);
    return maker;
}

/* -- receipt_logs: indexer.chain.extract._receipt_logs's common case, in C -------------------------------
 *
 * receipt_logs(receipt, index, tx_hash, block_number, block_hash, number_hex, out, last_log_index, make)
 * appends the receipt's logs to out (made by make, positionally, as _receipt_logs makes them) and returns the
 * last log index; or returns None, with out as it was, for anything but the common case: a field missing
 * or not an exact str, a hash or number written differently from the block's (upper case, another
 * spelling), a log index not "0x" + hex digits or not increasing, "removed" set, more than 4 topics,
 * non-ASCII text. The caller then runs the Python function on the same receipt, which accepts or raises
 * exactly as before: this only decides faster what it would accept. Lower-casing is ASCII's (what
 * str.lower does to ASCII text); a string with no upper-case letter is used as is. */

static PyObject *K_blockHash, *K_transactionHash, *K_blockNumber, *K_logs, *K_logIndex, *K_removed, *K_topics, *K_address, *K_data;

/* the key (an interned str) in d, borrowed; NULL when absent or on error (the caller checks PyErr_Occurred) */
static PyObject *get(PyObject *d, PyObject *key) { return PyDict_GetItemWithError(d, key); }

/* s lower-cased (a new reference), or NULL with no error set: not an exact ASCII str */
static PyObject *ascii_lower(PyObject *s) {
    if (!PyUnicode_CheckExact(s) || !PyUnicode_IS_ASCII(s)) return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    const Py_UCS1 *c = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t i = 0;
    while (i < n && !(c[i] >= 'A' && c[i] <= 'Z')) i++;
    if (i == n) return Py_NewRef(s);
    PyObject *out = PyUnicode_New(n, 127);
    if (out == NULL) return NULL; /* an error is set: the caller checks PyErr_Occurred */
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t j = 0; j < n; j++) o[j] = (c[j] >= 'A' && c[j] <= 'Z') ? (Py_UCS1)(c[j] + 32) : c[j];
    return out;
}

/* 1 when v (borrowed, may be NULL) is absent, None, or the exact str expected; else 0 */
static int absent_or_same(PyObject *v, PyObject *expected) {
    if (v == NULL || v == Py_None || v == expected) return 1;
    if (!PyUnicode_CheckExact(v) || !PyUnicode_CheckExact(expected)) return 0;
    return PyUnicode_Compare(v, expected) == 0; /* exact strs: no error */
}

/* "0x" + 1..15 hex digits -> its value; -1 otherwise */
static long long hex_quantity(PyObject *v) {
    if (v == NULL || !PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v)) return -1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    const Py_UCS1 *c = PyUnicode_1BYTE_DATA(v);
    if (n < 3 || n > 17 || c[0] != '0' || (c[1] != 'x' && c[1] != 'X')) return -1;
    long long x = 0;
    for (Py_ssize_t i = 2; i < n; i++) {
        int d;
        if (c[i] >= '0' && c[i] <= '9') d = c[i] - '0';
        else if (c[i] >= 'a' && c[i] <= 'f') d = c[i] - 'a' + 10;
        else if (c[i] >= 'A' && c[i] <= 'F') d = c[i] - 'A' + 10;
        else return -1;
        x = x * 16 + d;
    }
    return x;
}

static PyObject *receipt_logs(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "receipt_logs takes 9 positional arguments");
        return NULL;
    }
    PyObject *receipt = args[0], *index = args[1], *tx_hash = args[2], *block_number = args[3];
    PyObject *block_hash = args[4], *number_hex = args[5], *out = args[6], *make = args[8];
    if (!PyDict_CheckExact(receipt) || !PyList_CheckExact(out) || !PyLong_CheckExact(args[7]))
        Py_RETURN_NONE;
    int overflow;
    long long last = PyLong_AsLongLongAndOverflow(args[7], &overflow);
    if (last == -1 && PyErr_Occurred()) return NULL;
    if (overflow) Py_RETURN_NONE; /* beyond 64 bits: the Python check decides */
    PyObject *r_hash = get(receipt, K_blockHash);
    PyObject *r_tx = get(receipt, K_transactionHash);
    if (r_hash == NULL || r_hash == Py_None || !absent_or_same(r_hash, block_hash) || r_tx == NULL ||
        r_tx == Py_None || !absent_or_same(r_tx, tx_hash) ||
        !absent_or_same(get(receipt, K_blockNumber), number_hex)) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *logs = get(receipt, K_logs);
    if (PyErr_Occurred()) return NULL;
    if (logs == NULL || !PyList_CheckExact(logs)) Py_RETURN_NONE;
    if (logs == out) Py_RETURN_NONE;
    Py_ssize_t start = PyList_GET_SIZE(out);
    PyObject *fields[11] = {block_number, block_hash, tx_hash, index, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    /* make may be Python code: the list is held, its size read again and each log held while it is made,
     * so a change to the receipt from there cannot free what is in use */
    Py_INCREF(logs);
    PyObject *lg = NULL;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(logs); k++) {
        Py_XSETREF(lg, Py_NewRef(PyList_GET_ITEM(logs, k)));
        if (!PyDict_CheckExact(lg)) goto fallback;
        long long log_index = hex_quantity(get(lg, K_logIndex));
        PyObject *removed = get(lg, K_removed);
        PyObject *topics = get(lg, K_topics);
        PyObject *address = get(lg, K_address);
        PyObject *data = get(lg, K_data);
        if (log_index < 0 || log_index <= last ||
            !absent_or_same(get(lg, K_blockHash), block_hash) ||
            !absent_or_same(get(lg, K_blockNumber), number_hex) ||
            !absent_or_same(get(lg, K_transactionHash), tx_hash) ||
            (removed != NULL && removed != Py_None && removed != Py_False) || topics == NULL ||
            !PyList_CheckExact(topics) || PyList_GET_SIZE(topics) > 4 || address == NULL || data == NULL ||
            !PyUnicode_CheckExact(data))
            goto fallback;
        if (PyErr_Occurred()) goto error; /* a lookup raised (a key's __eq__): the check's error too */
        last = log_index;
        Py_ssize_t ntopics = PyList_GET_SIZE(topics);
        int ok = 1;
        fields[4] = PyLong_FromLongLong(log_index);
        fields[5] = fields[4] ? ascii_lower(address) : NULL;
        ok = fields[5] != NULL;
        fields[6] = Py_NewRef(data);
        for (Py_ssize_t t = 0; t < 4; t++) {
            fields[7 + t] = NULL;
            if (!ok) continue;
            if (t < ntopics) {
                fields[7 + t] = ascii_lower(PyList_GET_ITEM(topics, t));
                ok = fields[7 + t] != NULL;
            } else {
                fields[7 + t] = Py_NewRef(Py_None);
            }
        }
        PyObject *record = ok ? PyObject_Vectorcall(make, fields, 11, NULL) : NULL;
        Py_XDECREF(fields[4]);
        Py_XDECREF(fields[5]);
        Py_DECREF(fields[6]);
        for (int t = 7; t < 11; t++) Py_XDECREF(fields[t]);
        if (record == NULL) {
            if (PyErr_Occurred()) goto error;
            goto fallback; /* not ASCII text */
        }
        int rc = PyList_Append(out, record);
        Py_DECREF(record);
        if (rc < 0) goto error;
    }
    Py_XDECREF(lg);
    Py_DECREF(logs);
    return PyLong_FromLongLong(last);
fallback:
    if (PyErr_Occurred()) goto error; /* a failed lookup (a key's hash or comparison raised) */
    Py_XDECREF(lg);
    Py_DECREF(logs);
    if (PyList_SetSlice(out, start, PyList_GET_SIZE(out), NULL) < 0) return NULL;
    Py_RETURN_NONE;
error:
    Py_XDECREF(lg);
    Py_DECREF(logs);
    if (PyList_GET_SIZE(out) > start) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback); /* SetSlice must not run with (or clobber) the error */
        PyList_SetSlice(out, start, PyList_GET_SIZE(out), NULL);
        PyErr_Restore(type, value, traceback);
    }
    return NULL;
}

static PyMethodDef methods[] = {
    {"slot_maker", (PyCFunction)(void (*)(void))slot_maker, METH_FASTCALL,
     "slot_maker(cls, names) -> make(*values), a positional maker filling cls's slots directly"},
    {"receipt_logs", (PyCFunction)(void (*)(void))receipt_logs, METH_FASTCALL,
     "receipt_logs(receipt, index, tx_hash, block_number, block_hash, number_hex, out, last_log_index, make)"
     " -> last log index, or None (out unchanged) where indexer.chain.extract._receipt_logs must decide"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "protocols._speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    if ((K_blockHash = PyUnicode_InternFromString("blockHash")) == NULL) return NULL;
    if ((K_transactionHash = PyUnicode_InternFromString("transactionHash")) == NULL) return NULL;
    if ((K_blockNumber = PyUnicode_InternFromString("blockNumber")) == NULL) return NULL;
    if ((K_logs = PyUnicode_InternFromString("logs")) == NULL) return NULL;
    if ((K_logIndex = PyUnicode_InternFromString("logIndex")) == NULL) return NULL;
    if ((K_removed = PyUnicode_InternFromString("removed")) == NULL) return NULL;
    if ((K_topics = PyUnicode_InternFromString("topics")) == NULL) return NULL;
    if ((K_address = PyUnicode_InternFromString("address")) == NULL) return NULL;
    if ((K_data = PyUnicode_InternFromString("data")) == NULL) return NULL;
    return PyModule_Create(&module);
}
