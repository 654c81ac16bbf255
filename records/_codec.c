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

/* the record's JSON bytes (its type already checked) */
static PyObject *encode_one(Encoder *e, PyObject *record) {
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

static int check_type(Encoder *e, PyObject *record) {
    if (Py_TYPE(record) == e->cls) return 0;
    PyErr_Format(PyExc_TypeError, "an encoder of %s records, given %s", e->cls->tp_name,
                 Py_TYPE(record)->tp_name);
    return -1;
}

static PyObject *encoder_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Encoder *e = (Encoder *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "an encoder takes one record");
        return NULL;
    }
    if (check_type(e, args[0]) < 0) return NULL;
    return encode_one(e, args[0]);
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

/* ---- a kind's Kafka messages (sinks.kafka_keys.encode_batch), one call per kind ---- */

#define MAX_KEY_FIELDS 8

/* the slot offset of the encoder's field `name`; -1 with ValueError when the record has no such field */
static Py_ssize_t field_offset(Encoder *e, PyObject *name) {
    for (Py_ssize_t i = 0; i < Py_SIZE(e); i++) {
        int same = PyUnicode_Compare(e->fields[i].name, name);
        if (same == 0) return e->fields[i].offset;
        if (same == -1 && PyErr_Occurred()) return -1;
    }
    PyErr_Format(PyExc_ValueError, "%s has no field %R", e->cls->tp_name, name);
    return -1;
}

/* the record's slot at offset (borrowed); NULL with AttributeError when unset */
static PyObject *slot_of(PyObject *record, Py_ssize_t offset) {
    PyObject *v = *(PyObject **)((char *)record + offset);
    if (v == NULL) PyErr_SetString(PyExc_AttributeError, "a record's key or block hash field is unset");
    return v;
}

/* one part of a key, as an f-string writes it (format(v, "")), in UTF-8 */
static int put_key_part(Buffer *b, PyObject *v) {
    PyObject *text;
    if (PyUnicode_CheckExact(v)) {
        text = Py_NewRef(v);
    } else if (PyLong_CheckExact(v)) {
        int done = put_int64(b, v, 0);
        if (done) return done < 0 ? -1 : 0;
        text = PyObject_Str(v); /* past 64 bits */
    } else {
        text = PyObject_Format(v, NULL);
    }
    if (text == NULL) return -1;
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    int rc = utf8 == NULL ? -1 : buffer_put(b, utf8, size);
    Py_DECREF(text);
    return rc;
}

/* the message key's bytes: the key fields' parts joined by ':', or key_of(record) encoded */
static PyObject *key_bytes(PyObject *record, Py_ssize_t *offsets, Py_ssize_t count, PyObject *key_of) {
    if (count < 0) {
        PyObject *key = PyObject_CallOneArg(key_of, record);
        if (key == NULL) return NULL;
        PyObject *encoded = PyObject_CallMethod(key, "encode", NULL); /* key_of(record).encode() */
        Py_DECREF(key);
        return encoded;
    }
    char small[256];
    Buffer b;
    buffer_init_inline(&b, small, sizeof small);
    for (Py_ssize_t j = 0; j < count; j++) {
        PyObject *v = slot_of(record, offsets[j]);
        if (v == NULL || (j && buffer_put(&b, ":", 1) < 0) || put_key_part(&b, v) < 0) {
            buffer_free(&b);
            return NULL;
        }
    }
    return buffer_finish(&b);
}

/* the headers of a message of the block `block_hash` (a new reference): one list per block, kept in `headers` */
static PyObject *headers_of_block(PyObject *headers, PyObject *block_hash) {
    PyObject *found = PyDict_GetItemWithError(headers, block_hash);
    if (found != NULL || PyErr_Occurred()) return Py_XNewRef(found);
    /* block_hash.encode(), as the Python loop: a str's UTF-8, the same error for anything else */
    PyObject *value = PyUnicode_CheckExact(block_hash) ? PyUnicode_AsUTF8String(block_hash)
                                                        : PyObject_CallMethod(block_hash, "encode", NULL);
    if (value == NULL) return NULL;
    PyObject *list = Py_BuildValue("[(sN)]", "block_hash", value);
    if (list == NULL) return NULL;
    if (PyDict_SetItem(headers, block_hash, list) < 0) Py_CLEAR(list);
    return list;
}

/* encode_messages(encoder, rows, kind, key_fields, key_of, hash_field, default_hash, headers, out):
 * appends (kind, key, value, headers list) for each record of rows (the encoder's class), as
 * sinks.kafka_keys.encode_batch's Python loop does: key = the key_fields' values as an f-string joins
 * them with ':' (or key_of(record) when key_fields is None), UTF-8; value = the record's JSON; the
 * block is the hash_field's value, default_hash when that is None, empty or hash_field is None; the
 * headers list per block comes from (and goes to) the dict `headers`. */
static PyObject *encode_messages(PyObject *module, PyObject *args) {
    PyObject *encoder, *rows, *kind, *key_fields, *key_of, *hash_field, *default_hash, *headers, *out;
    if (!PyArg_ParseTuple(args, "O!OUOOOUO!O!:encode_messages", &EncoderType, &encoder, &rows, &kind, &key_fields,
                          &key_of, &hash_field, &default_hash, &PyDict_Type, &headers, &PyList_Type, &out))
        return NULL;
    Encoder *e = (Encoder *)encoder;
    Py_ssize_t offsets[MAX_KEY_FIELDS], count = -1, hash_offset = -1;
    if (key_fields != Py_None) {
        if (!PyTuple_Check(key_fields) || PyTuple_GET_SIZE(key_fields) > MAX_KEY_FIELDS) {
            PyErr_SetString(PyExc_TypeError, "key_fields is a tuple of at most 8 field names, or None");
            return NULL;
        }
        count = PyTuple_GET_SIZE(key_fields);
        for (Py_ssize_t j = 0; j < count; j++)
            if ((offsets[j] = field_offset(e, PyTuple_GET_ITEM(key_fields, j))) < 0) return NULL;
    } else if (!PyCallable_Check(key_of)) {
        PyErr_SetString(PyExc_TypeError, "key_of must be callable when key_fields is None");
        return NULL;
    }
    if (hash_field != Py_None && (hash_offset = field_offset(e, hash_field)) < 0) return NULL;
    PyObject *seq = PySequence_Fast(rows, "rows must be a sequence");
    if (seq == NULL) return NULL;
    /* the record, its block hash and its headers are held (not borrowed) while Python code runs (a key
     * part's format(), key_of, a hash's encode()): that code could drop the last other reference */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *record = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
        PyObject *block_hash = Py_NewRef(default_hash), *h = NULL, *key = NULL, *value = NULL, *message;
        if (check_type(e, record) < 0) goto fail;
        if (hash_offset >= 0) {
            PyObject *v = Py_XNewRef(slot_of(record, hash_offset));
            int truth = v == NULL ? -1 : PyObject_IsTrue(v); /* `hash or default`, as the Python loop */
            if (truth > 0) Py_SETREF(block_hash, Py_NewRef(v));
            Py_XDECREF(v);
            if (truth < 0) goto fail;
        }
        if ((h = headers_of_block(headers, block_hash)) == NULL) goto fail;
        if ((key = key_bytes(record, offsets, count, key_of)) == NULL) goto fail;
        if ((value = encode_one(e, record)) == NULL) goto fail;
        if ((message = PyTuple_New(4)) == NULL) goto fail;
        PyTuple_SET_ITEM(message, 0, Py_NewRef(kind));
        PyTuple_SET_ITEM(message, 1, key);
        PyTuple_SET_ITEM(message, 2, value);
        PyTuple_SET_ITEM(message, 3, h);
        Py_DECREF(record);
        Py_DECREF(block_hash);
        int rc = PyList_Append(out, message);
        Py_DECREF(message);
        if (rc < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        continue;
    fail:
        Py_DECREF(record);
        Py_DECREF(block_hash);
        Py_XDECREF(h);
        Py_XDECREF(key);
        Py_XDECREF(value);
        Py_DECREF(seq);
        return NULL;
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"encode_messages", encode_messages, METH_VARARGS,
     "encode_messages(encoder, rows, kind, key_fields, key_of, hash_field, default_hash, headers, out)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "records._codec", NULL, -1, module_methods};

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
