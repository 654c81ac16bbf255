/* cex._speedups: the one part of the CEX hot path Python cannot do cheaply, making one frozen BookDelta per
 * book level. A frozen dataclass sets each field through object.__setattr__ (~1 us a record; ~0.5 us through
 * the slot descriptors); here the record is allocated and its slots filled directly (~0.07 us).
 * Optional: built by `make install` (setuptools ext-modules in pyproject.toml); cex.sync falls back to
 * Python when it is missing, and tests/unit/test_cex_book_properties.py checks both give equal records. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define NFIELDS 11
static const char *FIELDS[NFIELDS] = {"exchange", "symbol", "side", "price", "size", "order_id",
                                      "sequence", "event_timestamp", "atom_timestamp",
                                      "engine_sequence", "engine_timestamp"};

typedef struct {
    PyTypeObject *cls;
    Py_ssize_t offset[NFIELDS];
} Layout;

static Layout layout = {NULL, {0}};

static PyObject *bind(PyObject *self, PyObject *cls) {
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "bind(cls): a class");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    Py_ssize_t offsets[NFIELDS];
    for (int i = 0; i < NFIELDS; i++) {
        PyObject *descr = PyDict_GetItemString(type->tp_dict, FIELDS[i]);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, FIELDS[i]);
            return NULL;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, FIELDS[i]);
            return NULL;
        }
        offsets[i] = member->offset;
    }
    Py_XDECREF(layout.cls);
    Py_INCREF(type);
    layout.cls = type;
    memcpy(layout.offset, offsets, sizeof(offsets));
    Py_RETURN_NONE;
}

static inline void put(PyObject *obj, int i, PyObject *value) {
    *(PyObject **)((char *)obj + layout.offset[i]) = Py_NewRef(value);
}

/* deltas(exchange, symbol, bids, asks, sequence, event_timestamp, atom_timestamp) -> list */
static PyObject *deltas(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (layout.cls == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() first");
        return NULL;
    }
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "deltas() takes 7 arguments");
        return NULL;
    }
    static PyObject *sides[2] = {NULL, NULL};
    if (sides[0] == NULL) {
        sides[0] = PyUnicode_InternFromString("bid");
        sides[1] = PyUnicode_InternFromString("ask");
        if (sides[0] == NULL || sides[1] == NULL) return NULL;
    }
    PyObject *levels[2];
    Py_ssize_t total = 0;
    for (int s = 0; s < 2; s++) {
        levels[s] = PySequence_Fast(args[2 + s], "levels: a sequence of (price, size)");
        if (levels[s] == NULL) {
            if (s == 1) Py_DECREF(levels[0]);
            return NULL;
        }
        total += PySequence_Fast_GET_SIZE(levels[s]);
    }
    PyObject *out = PyList_New(total);
    if (out == NULL) goto fail;
    Py_ssize_t n = 0;
    for (int s = 0; s < 2; s++) {
        Py_ssize_t len = PySequence_Fast_GET_SIZE(levels[s]);
        PyObject **items = PySequence_Fast_ITEMS(levels[s]);
        for (Py_ssize_t i = 0; i < len; i++) {
            PyObject *level = items[i];
            if (!PyTuple_Check(level) || PyTuple_GET_SIZE(level) != 2) {
                PyErr_SetString(PyExc_TypeError, "a level is a (price, size) tuple");
                goto fail;
            }
            PyObject *obj = layout.cls->tp_alloc(layout.cls, 0);
            if (obj == NULL) goto fail;
            put(obj, 0, args[0]);
            put(obj, 1, args[1]);
            put(obj, 2, sides[s]);
            put(obj, 3, PyTuple_GET_ITEM(level, 0));
            put(obj, 4, PyTuple_GET_ITEM(level, 1));
            put(obj, 5, Py_None);
            put(obj, 6, args[4]);
            put(obj, 7, args[5]);
            put(obj, 8, args[6]);
            put(obj, 9, Py_None);  /* engine_sequence, engine_timestamp: set by cex.sync where given */
            put(obj, 10, Py_None);
            PyList_SET_ITEM(out, n++, obj);
        }
    }
    Py_DECREF(levels[0]);
    Py_DECREF(levels[1]);
    return out;
fail:
    Py_XDECREF(out);  /* unfilled list slots are NULL: safe to free */
    Py_DECREF(levels[0]);
    Py_DECREF(levels[1]);
    return NULL;
}

/* apply_side(prices, sizes, texts, levels): cex.book.L2Book.update's loop for one side, the same steps
 * (binary search of the ascending prices by <, then == on the found one; size 0 removes, a missing level
 * is no error; a new or changed level's text is None) without the interpreter between them. */
static PyObject *apply_side(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]) ||
        !PyList_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "apply_side(prices: list, sizes: list, texts: list, levels)");
        return NULL;
    }
    PyObject *prices = args[0], *sizes = args[1], *texts = args[2];
    PyObject *levels = PySequence_Fast(args[3], "levels: a sequence of (price, size)");
    if (levels == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(levels);
    PyObject **items = PySequence_Fast_ITEMS(levels);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *level = items[k];
        if (!PyTuple_Check(level) || PyTuple_GET_SIZE(level) != 2) {
            PyErr_SetString(PyExc_TypeError, "a level is a (price, size) tuple");
            goto fail;
        }
        PyObject *price = PyTuple_GET_ITEM(level, 0), *size = PyTuple_GET_ITEM(level, 1);
        Py_ssize_t n = PyList_GET_SIZE(prices);
        if (PyList_GET_SIZE(sizes) != n || PyList_GET_SIZE(texts) != n) {
            PyErr_SetString(PyExc_ValueError, "prices, sizes and texts differ in length");
            goto fail;
        }
        Py_ssize_t lo = 0, hi = n;
        while (lo < hi) { /* bisect_left */
            Py_ssize_t mid = lo + (hi - lo) / 2;
            PyObject *at = PyList_GET_ITEM(prices, mid);
            Py_INCREF(at);
            int less = PyObject_RichCompareBool(at, price, Py_LT);
            Py_DECREF(at);
            if (less < 0) goto fail;
            if (less) lo = mid + 1;
            else hi = mid;
        }
        int found = 0;
        if (lo < n) {
            PyObject *at = PyList_GET_ITEM(prices, lo);
            Py_INCREF(at);
            found = PyObject_RichCompareBool(at, price, Py_EQ);
            Py_DECREF(at);
            if (found < 0) goto fail;
        }
        int nonzero = PyObject_IsTrue(size);
        if (nonzero < 0) goto fail;
        if (found) {
            if (nonzero) {
                if (PyList_SetItem(sizes, lo, Py_NewRef(size)) < 0) goto fail;
                if (PyList_SetItem(texts, lo, Py_NewRef(Py_None)) < 0) goto fail;
            } else if (PyList_SetSlice(prices, lo, lo + 1, NULL) < 0 ||
                       PyList_SetSlice(sizes, lo, lo + 1, NULL) < 0 ||
                       PyList_SetSlice(texts, lo, lo + 1, NULL) < 0) {
                goto fail;
            }
        } else if (nonzero) {
            if (PyList_Insert(prices, lo, price) < 0 || PyList_Insert(sizes, lo, size) < 0 ||
                PyList_Insert(texts, lo, Py_None) < 0) {
                goto fail;
            }
        }
    }
    Py_DECREF(levels);
    Py_RETURN_NONE;
fail:
    Py_DECREF(levels);
    return NULL;
}

static PyMethodDef methods[] = {
    {"apply_side", (PyCFunction)(void (*)(void))apply_side, METH_FASTCALL,
     "apply_side(prices, sizes, texts, levels): L2Book.update for one side"},
    {"bind", (PyCFunction)bind, METH_O, "bind(cls): the record class whose slots deltas() fills"},
    {"deltas", (PyCFunction)(void (*)(void))deltas, METH_FASTCALL,
     "deltas(exchange, symbol, bids, asks, sequence, event_timestamp, atom_timestamp) -> [record, ...]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
