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
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%s.%R is not an object slot", type->tp_name, name);
            Py_DECREF(offsets);
            return NULL;
        }
        at[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    PyObject *self = PyTuple_Pack(2, (PyObject *)type, offsets);
    Py_DECREF(offsets);
    if (self == NULL) return NULL;
    PyObject *maker = PyCFunction_New(&make_def, self);
    Py_DECREF(self);
    return maker;
}

static PyMethodDef methods[] = {
    {"slot_maker", (PyCFunction)(void (*)(void))slot_maker, METH_FASTCALL,
     "slot_maker(cls, names) -> make(*values), a positional maker filling cls's slots directly"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "protocols._speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
