/* sinks._copy: records -> PostgreSQL COPY text data, the writer's encoder for tables with NUMERIC columns.
 *
 * sinks.copy_text.record_encoder generates one f-string per table; this is the same encoding in one C loop:
 * per record, per column, the attribute read, printed and escaped, fields joined by a tab, rows ended by a
 * newline, the whole data one bytes object. Each column is one of
 *   STR      a str, escaped (a backslash, tab, newline or carriage return prefixed with a backslash)
 *   NUM      an int or Decimal, printed as format(value, "") prints it (exact decimal text), not escaped: a
 *            value whose text holds a tab, newline, CR or backslash raises TypeError (the Python encoder
 *            writes it as is, and the row is broken: only a non-number can print so)
 *   ARRAY    printed by a Python function of the value (copy_text.text_array: writes its own \N)
 *   CONVERT  a Python function of the record returning str or None (JSON text), then as STR
 * and, when NULLABLE is set, None is written \N. A None (or any non-str) in a NOT NULL STR column raises
 * TypeError; the Python encoder raises AttributeError there: either way the batch is not written.
 * Optional: built by `make install` (setuptools ext-modules in pyproject.toml); copy_text falls back to the
 * generated Python encoder, and tests/unit/test_copy_text.py checks both give the same bytes. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#include "_buffer.h"

enum { KIND_STR = 0, KIND_NUM = 1, KIND_ARRAY = 2, KIND_CONVERT = 3, NULLABLE = 8 };

/* A str's UTF-8, with the text format's four special characters escaped (none of them is part of a
 * multi-byte UTF-8 sequence, so bytes are scanned). Hex strings, nearly all values, are copied whole. */
static const char ESCAPED[256] = {['\\'] = '\\', ['\t'] = 't', ['\n'] = 'n', ['\r'] = 'r'};

static int put_escaped(Buffer *b, PyObject *s) {
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (u == NULL) return -1;
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char e = ESCAPED[(unsigned char)u[i]];
        if (!e) continue;
        if (buffer_put(b, u + start, i - start) < 0 || buffer_reserve(b, 2) < 0) return -1;
        b->data[b->size++] = '\\';
        b->data[b->size++] = e;
        start = i + 1;
    }
    return buffer_put(b, u + start, n - start);
}

/* format(value, "") of anything but an exact int in 64 bits (a Decimal, a bigger int), kept out of the
 * hot loop's inlined code. Printed unescaped: a value whose text holds a special character (a str in a
 * NUM column, say) would shift the row's columns or start a row of its own, so it is refused. */
static Py_NO_INLINE int put_formatted(Buffer *b, PyObject *v, PyObject *empty) {
    PyObject *text = PyObject_Format(v, empty);
    if (text == NULL) return -1;
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(text, &n);
    int rc = u == NULL ? -1 : 0;
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        if (ESCAPED[(unsigned char)u[i]]) {
            PyErr_Format(PyExc_TypeError, "a number expected, got %.100s %R", Py_TYPE(v)->tp_name, v);
            rc = -1;
        }
    }
    if (rc == 0) rc = buffer_put(b, u, n);
    Py_DECREF(text);
    return rc;
}

/* format(value, "") of an int or Decimal: exact ints print in C, anything else through PyObject_Format. */
static int put_number(Buffer *b, PyObject *v, PyObject *empty) {
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow) {
            if (x == -1 && PyErr_Occurred()) return -1;
            char tmp[24], *end = tmp + sizeof tmp, *p = end;
            unsigned long long m = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
            do {
                *--p = (char)('0' + m % 10);
                m /= 10;
            } while (m);
            if (x < 0) *--p = '-';
            return buffer_put(b, p, end - p);
        }
    }
    return put_formatted(b, v, empty);
}

/* The encoder: a tuple of (name: str, kind: int, function or None) per column; encode(records) -> bytes. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t ncols;
    PyObject **names;
    int *kinds;
    PyObject **functions;
    Py_ssize_t *offsets; /* per column, the slot's offset in an instance of cls; 0: read by name */
    PyTypeObject *cls;   /* the record class whose slots are read directly (NULL: none) */
    PyObject *empty;
    int ready; /* __init__ completed: a failed __init__ leaves columns without a name */
} Encoder;

/* The functions (converters, possibly closures) may refer back to what holds the encoder: the cycle
 * collector sees them through traverse and breaks such a cycle through clear. */
static int Encoder_traverse(Encoder *self, visitproc visit, void *arg) {
    for (Py_ssize_t i = 0; self->functions && i < self->ncols; i++) Py_VISIT(self->functions[i]);
    Py_VISIT(self->cls);
    return 0;
}

static int Encoder_clear(Encoder *self) {
    for (Py_ssize_t i = 0; self->functions && i < self->ncols; i++) Py_CLEAR(self->functions[i]);
    Py_CLEAR(self->cls);
    self->ready = 0; /* a function gone: encode() refuses rather than call NULL */
    return 0;
}

static void Encoder_dealloc(Encoder *self) {
    PyObject_GC_UnTrack(self);
    Encoder_clear(self);
    for (Py_ssize_t i = 0; self->names && i < self->ncols; i++) Py_XDECREF(self->names[i]);
    PyMem_Free(self->names);
    PyMem_Free(self->functions);
    PyMem_Free(self->kinds);
    PyMem_Free(self->offsets);
    Py_XDECREF(self->empty);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Encoder_init(Encoder *self, PyObject *args, PyObject *kwds) {
    PyObject *columns, *cls = Py_None;
    static char *keywords[] = {"columns", "cls", NULL};
    if (self->names != NULL) {
        PyErr_SetString(PyExc_TypeError, "Encoder already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|O:Encoder", keywords, &PyTuple_Type, &columns, &cls))
        return -1;
    if (cls != Py_None && !PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "Encoder: cls must be a class or None");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(columns);
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "Encoder needs at least one column");
        return -1;
    }
    self->names = PyMem_Calloc((size_t)n, sizeof(PyObject *));
    self->functions = PyMem_Calloc((size_t)n, sizeof(PyObject *));
    self->kinds = PyMem_Calloc((size_t)n, sizeof(int));
    self->offsets = PyMem_Calloc((size_t)n, sizeof(Py_ssize_t));
    self->empty = PyUnicode_FromStringAndSize("", 0);
    if (!self->names || !self->functions || !self->kinds || !self->offsets || !self->empty) {
        PyErr_NoMemory();
        return -1;
    }
    self->ncols = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *spec = PyTuple_GET_ITEM(columns, i), *name, *function;
        int kind;
        if (!PyTuple_Check(spec) || !PyArg_ParseTuple(spec, "UiO", &name, &kind, &function)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a column is (name, kind, function)");
            return -1;
        }
        int base = kind & ~NULLABLE;
        if (base < KIND_STR || base > KIND_CONVERT) {
            PyErr_Format(PyExc_ValueError, "column %R: unknown kind %d", name, kind);
            return -1;
        }
        if ((base == KIND_ARRAY || base == KIND_CONVERT) && !PyCallable_Check(function)) {
            PyErr_Format(PyExc_TypeError, "column %R: its kind needs a function", name);
            return -1;
        }
        self->names[i] = Py_NewRef(name);
        self->kinds[i] = kind;
        self->functions[i] = function == Py_None ? NULL : Py_NewRef(function);
        if (cls != Py_None && base != KIND_CONVERT) {
            /* an object slot of cls itself (a slots dataclass field): read at its offset, as the member
             * descriptor would, for records whose type is exactly cls */
            PyObject *descr = PyDict_GetItemWithError(((PyTypeObject *)cls)->tp_dict, name);
            if (descr == NULL && PyErr_Occurred()) return -1;
            /* the descriptor's own class must be cls: a member of another class assigned as an attribute
             * of cls has an offset in that class's layout (Python's descriptor checks the instance) */
            if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                PyDescr_TYPE(descr) == (PyTypeObject *)cls &&
                ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX)
                self->offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        }
    }
    if (cls != Py_None) self->cls = (PyTypeObject *)Py_NewRef(cls);
    self->ready = 1;
    return 0;
}

static int put_value(Encoder *self, Buffer *b, Py_ssize_t i, PyObject *record) {
    int kind = self->kinds[i], base = kind & ~NULLABLE;
    PyObject *v;
    Py_ssize_t offset = self->offsets[i];
    if (base == KIND_CONVERT) {
        v = PyObject_CallOneArg(self->functions[i], record);
    } else if (offset && Py_IS_TYPE(record, self->cls)) {
        v = *(PyObject **)((char *)record + offset);
        if (v == NULL) {
            PyErr_Format(PyExc_AttributeError, "%.100s has no value for %R", self->cls->tp_name, self->names[i]);
            return -1;
        }
        Py_INCREF(v);
    } else {
        v = PyObject_GetAttr(record, self->names[i]);
    }
    if (v == NULL) return -1;
    int rc;
    if (base == KIND_ARRAY) {
        PyObject *text = PyObject_CallOneArg(self->functions[i], v);
        Py_DECREF(v);
        if (text == NULL) return -1;
        if (!PyUnicode_Check(text)) {
            PyErr_Format(PyExc_TypeError, "column %R: the array function returned %.100s", self->names[i],
                         Py_TYPE(text)->tp_name);
            Py_DECREF(text);
            return -1;
        }
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(text, &n);
        rc = u == NULL ? -1 : buffer_put(b, u, n);
        Py_DECREF(text);
        return rc;
    }
    if (v == Py_None && (kind & NULLABLE || base == KIND_CONVERT)) {
        Py_DECREF(v);
        return buffer_put(b, "\\N", 2);
    }
    if (base == KIND_NUM) {
        rc = put_number(b, v, self->empty);
    } else if (PyUnicode_Check(v)) {
        rc = put_escaped(b, v);
    } else {
        PyErr_Format(PyExc_TypeError, "column %R: a str expected, got %.100s", self->names[i],
                     Py_TYPE(v)->tp_name);
        rc = -1;
    }
    Py_DECREF(v);
    return rc;
}

static PyObject *Encoder_encode(Encoder *self, PyObject *records) {
    if (!self->ready) {
        PyErr_SetString(PyExc_TypeError, "Encoder not initialised");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(records, "encode(records): a sequence of records");
    if (seq == NULL) return NULL;
    Buffer b;
    buffer_init(&b);
    /* A list is seq itself, and a column's function, __getattr__ or __format__ may change it: its size
     * and items are read again for each row (as the Python encoder's loop does) and the row's record
     * held while its columns are printed. */
    for (Py_ssize_t r = 0; r < PySequence_Fast_GET_SIZE(seq); r++) {
        PyObject *record = Py_NewRef(PySequence_Fast_GET_ITEM(seq, r));
        for (Py_ssize_t i = 0; i < self->ncols; i++) {
            if ((i && buffer_put(&b, "\t", 1) < 0) || put_value(self, &b, i, record) < 0) {
                Py_DECREF(record);
                goto fail;
            }
        }
        Py_DECREF(record);
        if (buffer_put(&b, "\n", 1) < 0) goto fail;
    }
    Py_DECREF(seq);
    return buffer_finish(&b);
fail:
    Py_DECREF(seq);
    buffer_free(&b);
    return NULL;
}

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)Encoder_encode, METH_O, "encode(records) -> bytes: their COPY text rows"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sinks._copy.Encoder",
    .tp_basicsize = sizeof(Encoder),
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Encoder_traverse,
    .tp_clear = (inquiry)Encoder_clear,
    .tp_doc = "Encoder(columns, cls=None): columns a tuple of (attribute name, kind, function or None); the\n"
              "slots of records of exactly type cls are read directly",
    .tp_methods = Encoder_methods,
    .tp_init = (initproc)Encoder_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sinks._copy", "Records as PostgreSQL COPY text data, in C.", -1, NULL,
};

PyMODINIT_FUNC PyInit__copy(void) {
    if (PyType_Ready(&EncoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Encoder", (PyObject *)&EncoderType) < 0 ||
        PyModule_AddIntConstant(m, "STR", KIND_STR) < 0 || PyModule_AddIntConstant(m, "NUM", KIND_NUM) < 0 ||
        PyModule_AddIntConstant(m, "ARRAY", KIND_ARRAY) < 0 ||
        PyModule_AddIntConstant(m, "CONVERT", KIND_CONVERT) < 0 ||
        PyModule_AddIntConstant(m, "NULLABLE", NULLABLE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
