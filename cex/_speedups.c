/* cex._speedups: the parts of the CEX hot path Python cannot do cheaply. Making one frozen BookDelta per
 * book level: a frozen dataclass sets each field through object.__setattr__ (~1 us a record; ~0.5 us through
 * the slot descriptors); here the record is allocated and its slots filled directly (~0.07 us). Making the
 * Decimal of each price and size from the exchange's text (~0.04 us, Decimal(text) ~0.3 us), the search
 * key and the checksum text of a level from the Decimal's fields; the book's binary search and snapshot
 * loading.
 * Optional: built by `make install` (setuptools ext-modules in pyproject.toml); cex.sync falls back to
 * Python when it is missing, and tests/unit/test_cex_book_properties.py checks both give equal records. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>

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
        /* a member descriptor of another class set on this one has that class's offset, which may lie past
         * the end of this class's objects: deltas() would write there */
        PyTypeObject *owner = ((PyMemberDescrObject *)descr)->d_common.d_type;
        if (member->type != T_OBJECT_EX || !PyType_IsSubtype(type, owner) || member->offset < 0 ||
            member->offset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot of its own", type->tp_name, FIELDS[i]);
            return NULL;
        }
        offsets[i] = member->offset;
        for (int j = 0; j < i; j++) {
            if (offsets[j] == offsets[i]) { /* deltas() would write the slot twice, leaking the first value */
                PyErr_Format(PyExc_TypeError, "%s.%s and .%s are one slot", type->tp_name, FIELDS[j], FIELDS[i]);
                return NULL;
            }
        }
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

static PyObject *Decimal = NULL; /* decimal.Decimal, looked up at import */
#define CACHE_LIMIT 65536

/* Decimals made without Decimal(text). Decimal(text) costs ~0.3 us: a call through the type, the current
 * context, a copy of the text, libmpdec's general parser. A book feed's numbers are short plain decimals
 * (`30243.5`, `0.00012345`), which need none of that: their coefficient and exponent are read here and the
 * Decimal's fields filled directly (~0.04 us). This relies on the layout of CPython's _decimal object
 * (PyDecObject: the hash, libmpdec's mpd_t, four words of static coefficient data; unchanged 3.3-3.13), so
 * it is verified at import: Decimal(text) of a set of texts must hold exactly the fields written here
 * (flags, exponent, digits, words, the data pointer at the static words) and equal what is made here;
 * otherwise (another layout, a pure-Python decimal) every Decimal comes from Decimal(text). Anything but a
 * plain decimal of at most 38 significant digits (an exponent, a '+', spaces, '_', NaN) also goes to
 * Decimal(text), so the values are always exactly Decimal(text)'s. */
typedef struct {
    uint8_t flags;
    int64_t exp, digits, len, alloc;
    uint64_t *data;
} MpdLayout;

typedef struct {
    PyObject_HEAD
    Py_hash_t hash;
    MpdLayout dec;
    uint64_t data[4];
} DecimalLayout;

#define MPD_NEG 1
#define MPD_STATIC 16
#define MPD_STATIC_DATA 32
#define WORD 10000000000000000000ULL /* libmpdec's radix on 64-bit: 19 digits a word */
static int fast_decimals = 0;        /* the layout check passed */

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

typedef struct {
    int neg;
    int64_t exp, digits;
    unsigned __int128 coef;
} Parsed;

/* parse_plain for more than 19 significant digits: two passes, a 128-bit coefficient */
static int parse_plain_wide(const char *s, Py_ssize_t n, Parsed *p) {
    const char *at = s, *end = s + n;
    p->neg = 0;
    if (at < end && *at == '-') {
        p->neg = 1;
        at++;
    }
    if (end - at > 200) return 0;
    const char *whole = at;
    while (at < end && (unsigned)(*at - '0') < 10) at++;
    const char *whole_end = at, *frac = at, *frac_end = at;
    if (at == whole) return 0; /* no digit before the point */
    if (at < end) {
        if (*at != '.') return 0;
        frac = ++at;
        while (at < end && (unsigned)(*at - '0') < 10) at++;
        frac_end = at;
        if (at != end || frac_end == frac) return 0;
    }
    int64_t fraction_digits = frac_end - frac;
    /* the coefficient: the digits without the point, leading zeros skipped */
    while (whole < whole_end && *whole == '0') whole++;
    if (whole == whole_end)
        while (frac < frac_end && *frac == '0') frac++;
    int64_t significant = (whole_end - whole) + (frac_end - frac);
    if (significant > 38) return 0;
    uint64_t low = 0;
    unsigned __int128 coef = 0;
    int64_t k = 0;
    for (const char *c = whole; c < whole_end; c++, k++) {
        if (k == 19) coef = low;
        if (k < 19) low = low * 10 + (unsigned)(*c - '0');
        else coef = coef * 10 + (unsigned)(*c - '0');
    }
    for (const char *c = frac; c < frac_end; c++, k++) {
        if (k == 19) coef = low;
        if (k < 19) low = low * 10 + (unsigned)(*c - '0');
        else coef = coef * 10 + (unsigned)(*c - '0');
    }
    p->exp = -fraction_digits;
    p->digits = significant ? significant : 1;
    p->coef = significant <= 19 ? low : coef;
    return 1;
}

/* a plain decimal: -?digits[.digits], at most 38 significant digits; 0 when the text is anything else.
 * One pass for the usual case (at most 19 significant digits: one 64-bit word), the same result as
 * parse_plain_wide, which takes the rest. */
static int parse_plain(const char *s, Py_ssize_t n, Parsed *p) {
    const char *at = s, *end = s + n;
    int neg = 0;
    if (at < end && *at == '-') {
        neg = 1;
        at++;
    }
    const char *start = at;
    uint64_t coef = 0;
    int64_t significant = 0, fraction = 0;
    int point = 0;
    for (; at < end; at++) {
        unsigned d = (unsigned)(*at - '0');
        if (d < 10) {
            fraction += point;
            if (significant || d) { /* leading zeros are not significant */
                if (++significant > 19) return parse_plain_wide(s, n, p);
                coef = coef * 10 + d;
            }
        } else if (*at == '.' && !point && at != start) {
            point = 1;
        } else {
            return 0;
        }
    }
    if (at == start || (point && fraction == 0)) return 0; /* empty, or "1." */
    p->neg = neg;
    p->exp = -fraction;
    p->digits = significant ? significant : 1;
    p->coef = coef;
    return 1;
}

/* the correctly rounded double of a parsed text (Clinger's fast path: both operands exact doubles, one
 * rounding), or 0 when it does not apply */
static int parsed_key(const Parsed *p, double *key) {
    if (p->coef >= ((unsigned __int128)1 << 53) || p->exp < -22) return 0;
    double k = (double)(uint64_t)p->coef / POW10[-p->exp];
    *key = p->neg ? -k : k;
    return 1;
}

static PyObject *make_decimal(const Parsed *p) {
    DecimalLayout *d = (DecimalLayout *)_PyObject_New((PyTypeObject *)Decimal);
    if (d == NULL) return NULL;
    d->hash = -1;
    d->dec.flags = MPD_STATIC | MPD_STATIC_DATA | (p->neg ? MPD_NEG : 0);
    d->dec.exp = p->exp;
    d->dec.digits = p->digits;
    d->dec.alloc = 4;
    d->dec.data = d->data;
    if (p->digits <= 19) { /* one word: no 128-bit division */
        d->data[0] = (uint64_t)p->coef;
        d->data[1] = 0;
        d->dec.len = 1;
    } else {
        d->data[0] = (uint64_t)(p->coef % WORD);
        d->data[1] = (uint64_t)(p->coef / WORD);
        d->dec.len = 2;
    }
    return (PyObject *)d;
}

/* The correctly rounded double of a Decimal read from its fields (no str, no float parsing: what
 * float(value) gives, ~20x cheaper), when it is finite with a coefficient below 2^53 and an exponent in
 * -22..0; 0 otherwise. */
static int decimal_key(PyObject *value, double *key) {
    if (!fast_decimals || !Py_IS_TYPE(value, (PyTypeObject *)Decimal)) return 0;
    DecimalLayout *d = (DecimalLayout *)value;
    if ((d->dec.flags & 14) || d->dec.len != 1 || d->dec.exp > 0 || d->dec.exp < -22 ||
        d->dec.data[0] >= ((uint64_t)1 << 53))
        return 0;
    double k = (double)d->dec.data[0] / POW10[-d->dec.exp];
    *key = (d->dec.flags & MPD_NEG) ? -k : k;
    return 1;
}

/* Decimal(text) for a str, made directly when it is a plain decimal; *key (when given) its search key,
 * NAN when it was not made here */
static PyObject *decimal_from_str(PyObject *text, double *key) {
    if (key != NULL) *key = NAN;
    if (fast_decimals && PyUnicode_IS_COMPACT_ASCII(text)) {
        Parsed p;
        if (parse_plain((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), &p)) {
            if (key != NULL && !parsed_key(&p, key)) *key = NAN;
            return make_decimal(&p);
        }
    }
    return PyObject_CallOneArg(Decimal, text);
}

/* The float of a Decimal price (correctly rounded, so monotonic: a < b => key(a) <= key(b), and
 * key(a) != key(b) => a != b). -1 with an exception set for a price that is not a finite number. */
static int price_key(PyObject *price, double *out) {
    if (decimal_key(price, out)) return 0;
    PyObject *f = PyNumber_Float(price);
    if (f == NULL) return -1;
    double k = PyFloat_AS_DOUBLE(f);
    Py_DECREF(f);
    if (!isfinite(k)) {
        PyErr_Format(PyExc_ArithmeticError, "not a finite price: %R", price);
        return -1;
    }
    *out = k;
    return 0;
}

static int side_changed(void) {
    PyErr_SetString(PyExc_RuntimeError, "a book side changed during apply_side (by a price's or size's methods)");
    return -1;
}

/* keys[i], computed from prices[i] on first use (a snapshot loads its keys as None: most are never read);
 * i < n, the lists' length, which only Python code run here (float() of a price that is not a Decimal)
 * can change: checked after it */
static int key_made(PyObject *keys, PyObject *prices, Py_ssize_t n, Py_ssize_t i, double *out) {
    PyObject *item = PyList_GET_ITEM(keys, i);
    if (item != Py_None) {
        PyErr_SetString(PyExc_TypeError, "a price key is a float or None");
        return -1;
    }
    PyObject *price = Py_NewRef(PyList_GET_ITEM(prices, i));
    int bad = price_key(price, out); /* a Decimal's fields; else float(price), which may run Python code */
    Py_DECREF(price);
    if (bad < 0) return -1;
    if (PyList_GET_SIZE(keys) != n || PyList_GET_SIZE(prices) != n) return side_changed();
    PyObject *f = PyFloat_FromDouble(*out);
    if (f == NULL) return -1;
    return PyList_SetItem(keys, i, f); /* replaces the None (or whatever Python code put there) */
}

static inline int key_at(PyObject *keys, PyObject *prices, Py_ssize_t n, Py_ssize_t i, double *out) {
    PyObject *item = PyList_GET_ITEM(keys, i);
    if (PyFloat_CheckExact(item)) { /* made before: the search's usual step, inline */
        *out = PyFloat_AS_DOUBLE(item);
        return 0;
    }
    return key_made(keys, prices, n, i, out);
}

/* PyList_Insert's effect with one memmove (3.11's moves the tail one pointer at a time in a loop): append
 * (which grows the list and takes the reference), then shift the tail up and put the item at i */
static int insert_at(PyObject *list, Py_ssize_t i, PyObject *item) {
    if (PyList_Append(list, item) < 0) return -1;
    PyObject **items = ((PyListObject *)list)->ob_item;
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (i < n - 1) {
        memmove(&items[i + 1], &items[i], (size_t)(n - 1 - i) * sizeof(PyObject *));
        items[i] = item; /* the reference the append took, whose slot the move overwrote */
    }
    return 0;
}

/* A book side's list that ordered_side took out of the cycle collector (Decimals only) back in it when it is
 * given anything else, through which a reference cycle could run */
static inline void track_for(PyObject *list, PyObject *item) {
    if (!Py_IS_TYPE(item, (PyTypeObject *)Decimal) && !PyObject_GC_IsTracked(list)) PyObject_GC_Track(list);
}

static int delete_at(PyObject **lists, Py_ssize_t i) {
    for (int j = 0; j < 4; j++)
        if (PyList_SetSlice(lists[j], i, i + 1, NULL) < 0) return -1;
    return 0;
}

/* apply_side(keys, prices, sizes, texts, levels): cex.book.L2Book.update's loop for one side, the same
 * result as its Python loop (size 0 removes, a missing level is no error; a new or changed level's text is
 * None). The level is found by a binary search over the prices' float keys (a C double compare, not a
 * Decimal one at ~270 instructions); prices whose keys are equal are told apart by Decimal < and ==, so the
 * search is exact. */
static PyObject *apply_side(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if ((nargs != 5 && nargs != 6) || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]) ||
        !PyList_CheckExact(args[2]) || !PyList_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "apply_side(keys: list, prices: list, sizes: list, texts: list, levels[, level_keys])");
        return NULL;
    }
    PyObject *keys = args[0], *prices = args[1], *sizes = args[2], *texts = args[3];
    PyObject *lists[4] = {keys, prices, sizes, texts};
    PyObject *levels = PySequence_Fast(args[4], "levels: a sequence of (price, size)");
    if (levels == NULL) return NULL;
    PyObject *level = NULL;
    /* the levels' keys made by levels() from the exchange's text (a float, or None: made here) */
    PyObject *given = nargs == 6 && PyList_CheckExact(args[5]) &&
                              PyList_GET_SIZE(args[5]) == PySequence_Fast_GET_SIZE(levels)
                          ? args[5]
                          : NULL;
    /* A size's __bool__ and a price's __eq__ or __float__ (for what is not a Decimal) are Python code, which
     * may change the list of levels (or the given keys): it is read by index as the Python loop reads it, up
     * to where it ends now, each level held while it is applied */
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(levels); k++) {
        level = Py_NewRef(PySequence_Fast_GET_ITEM(levels, k));
        if (!PyTuple_Check(level) || PyTuple_GET_SIZE(level) != 2) {
            PyErr_SetString(PyExc_TypeError, "a level is a (price, size) tuple");
            goto fail;
        }
        PyObject *price = PyTuple_GET_ITEM(level, 0), *size = PyTuple_GET_ITEM(level, 1);
        Py_ssize_t n = PyList_GET_SIZE(prices);
        if (PyList_GET_SIZE(sizes) != n || PyList_GET_SIZE(texts) != n || PyList_GET_SIZE(keys) != n) {
            PyErr_SetString(PyExc_ValueError, "keys, prices, sizes and texts differ in length");
            goto fail;
        }
        double key, at;
        PyObject *hint = given == NULL || k >= PyList_GET_SIZE(given) ? NULL : PyList_GET_ITEM(given, k);
        if (hint != NULL && PyFloat_CheckExact(hint)) key = PyFloat_AS_DOUBLE(hint);
        else if (price_key(price, &key) < 0) goto fail;
        Py_ssize_t lo = 0, hi = n;
        while (lo < hi) { /* the first index whose key >= key */
            Py_ssize_t mid = lo + (hi - lo) / 2;
            if (key_at(keys, prices, n, mid, &at) < 0) goto fail;
            if (at < key) lo = mid + 1;
            else hi = mid;
        }
        int found = 0;
        while (lo < n) { /* among equal keys (rare: prices beyond a double's 15-17 digits), by Decimal */
            if (key_at(keys, prices, n, lo, &at) < 0) goto fail;
            if (at != key) break;
            PyObject *there = PyList_GET_ITEM(prices, lo);
            Py_INCREF(there);
            found = PyObject_RichCompareBool(there, price, Py_EQ);
            int less = found == 0 ? PyObject_RichCompareBool(there, price, Py_LT) : 0;
            Py_DECREF(there);
            if (found < 0 || less < 0) goto fail;
            if (PyList_GET_SIZE(keys) != n || PyList_GET_SIZE(prices) != n) { /* by an __eq__ or __lt__ */
                side_changed();
                goto fail;
            }
            if (!less) break;
            lo++;
        }
        int nonzero = PyObject_IsTrue(size);
        if (nonzero < 0) goto fail;
        track_for(prices, price);
        track_for(sizes, size);
        if (found) {
            if (nonzero) {
                if (PyList_SetItem(sizes, lo, Py_NewRef(size)) < 0) goto fail;
                if (PyList_SetItem(texts, lo, Py_NewRef(Py_None)) < 0) goto fail;
            } else if (delete_at(lists, lo) < 0) {
                goto fail;
            }
        } else if (nonzero) {
            PyObject *f = PyFloat_FromDouble(key);
            if (f == NULL) goto fail;
            int bad = insert_at(keys, lo, f) < 0 || insert_at(prices, lo, price) < 0 ||
                      insert_at(sizes, lo, size) < 0 || insert_at(texts, lo, Py_None) < 0;
            Py_DECREF(f);
            if (bad) goto fail;
        }
        Py_CLEAR(level);
    }
    Py_DECREF(levels);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(level);
    Py_DECREF(levels);
    return NULL;
}

/* decimal(text) -> Decimal(text) (a str; anything else goes to Decimal() as it is) */
static PyObject *decimal(PyObject *self, PyObject *text) {
    if (PyUnicode_CheckExact(text)) return decimal_from_str(text, NULL);
    return PyObject_CallOneArg(Decimal, text);
}

/* whether Decimal(text) of each text holds exactly the fields make_decimal writes */
static int layout_matches(void) {
    static const char *texts[] = {"0",        "-0",          "0.000",  "30243.5",   "0.00012345", "-1.10",
                                  "4265.00000000", "007.50", "9999999999999999999", "10000000000000000000",
                                  "12345678901234567890123456789012345678", "-0.0000000000000000000000001"};
    if (((PyTypeObject *)Decimal)->tp_basicsize != (Py_ssize_t)sizeof(DecimalLayout) ||
        ((PyTypeObject *)Decimal)->tp_itemsize != 0 || PyType_IS_GC((PyTypeObject *)Decimal))
        return 0;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        Parsed p;
        if (!parse_plain(texts[i], (Py_ssize_t)strlen(texts[i]), &p)) return 0;
        PyObject *made = make_decimal(&p);
        PyObject *ref = PyObject_CallFunction(Decimal, "s", texts[i]);
        int same = 0;
        if (made != NULL && ref != NULL && Py_IS_TYPE(ref, (PyTypeObject *)Decimal)) {
            DecimalLayout *a = (DecimalLayout *)made, *b = (DecimalLayout *)ref;
            same = a->dec.flags == b->dec.flags && a->dec.exp == b->dec.exp && a->dec.digits == b->dec.digits &&
                   a->dec.len == b->dec.len && a->dec.alloc == b->dec.alloc && b->dec.data == b->data &&
                   a->data[0] == b->data[0] &&
                   (a->dec.len < 2 || a->data[1] == b->data[1]);
            if (same) {
                PyObject *s1 = PyObject_Str(made), *s2 = PyObject_Str(ref);
                same = s1 != NULL && s2 != NULL && PyUnicode_Compare(s1, s2) == 0 &&
                       PyObject_RichCompareBool(made, ref, Py_EQ) == 1 && PyObject_Hash(made) == PyObject_Hash(ref);
                Py_XDECREF(s1);
                Py_XDECREF(s2);
            }
        }
        Py_XDECREF(made);
        Py_XDECREF(ref);
        if (PyErr_Occurred()) PyErr_Clear();
        if (!same) return 0;
    }
    return 1;
}

static PyObject *fast_decimals_on(PyObject *self, PyObject *unused) { return PyBool_FromLong(fast_decimals); }

/* The Decimal of an exchange's number text, from ``cache`` (text -> Decimal, cleared when it reaches
 * CACHE_LIMIT entries) or made and remembered: a book feed sends the same price and size texts again and
 * again, and a dict lookup of a fresh string is a fraction of Decimal(text). A Decimal is immutable and
 * keeps the text's digits, so the shared object is the one Decimal(text) would make. */
static PyObject *decimal_of(PyObject *cache, PyObject *text) {
    if (!PyUnicode_CheckExact(text)) {
        PyErr_Format(PyExc_TypeError, "a price or size is a decimal string, not %.50s", Py_TYPE(text)->tp_name);
        return NULL;
    }
    if (cache == Py_None) return decimal_from_str(text, NULL);
    PyObject *value = PyDict_GetItemWithError(cache, text);
    if (value != NULL) return Py_NewRef(value);
    if (PyErr_Occurred()) return NULL;
    value = decimal_from_str(text, NULL);
    if (value == NULL) return NULL;
    if (PyDict_GET_SIZE(cache) >= CACHE_LIMIT) PyDict_Clear(cache);
    if (PyDict_SetItem(cache, text, value) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

/* The search key of a price from its text: what float(Decimal(text)) gives (both are the correctly rounded
 * double of the same number), without going through the Decimal's str (~5x the instructions). None when
 * the text is not a plain finite number for the double parser: apply_side then asks the Decimal. */
static PyObject *text_key(PyObject *text) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    if (s == NULL) return NULL;
    char *end = NULL;
    double k = PyOS_string_to_double(s, &end, NULL);
    if ((k == -1.0 && PyErr_Occurred()) || end != s + n || !isfinite(k)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(k);
}

/* levels(rows, cache[, keys]) -> [(Decimal, Decimal), ...]: rows [[price, size, ...], ...] of strings (OKX,
 * Binance, Bybit), the first two of each row read through decimal_of; with a list ``keys``, each price's
 * search key (text_key) is appended to it, for apply_side. */
static PyObject *levels(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if ((nargs != 2 && nargs != 3) || !(PyDict_CheckExact(args[1]) || args[1] == Py_None) ||
        (nargs == 3 && !PyList_CheckExact(args[2]))) {
        PyErr_SetString(PyExc_TypeError, "levels(rows, cache: dict | None[, keys: list])");
        return NULL;
    }
    PyObject *cache = args[1];
    PyObject *keys = nargs == 3 ? args[2] : NULL;
    PyObject *rows = PySequence_Fast(args[0], "rows: a list of [price, size, ...]");
    if (rows == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(rows);
    PyObject **items = PySequence_Fast_ITEMS(rows);
    PyObject *out = PyList_New(n);
    if (out == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = items[i];
        PyObject **cells;
        if (PyList_CheckExact(row) && PyList_GET_SIZE(row) >= 2) cells = ((PyListObject *)row)->ob_item;
        else if (PyTuple_CheckExact(row) && PyTuple_GET_SIZE(row) >= 2) cells = ((PyTupleObject *)row)->ob_item;
        else {
            PyErr_Format(PyExc_ValueError, "a book row is [price, size, ...], not %R", row);
            goto fail;
        }
        PyObject *price;
        double k = NAN;
        if (fast_decimals && PyUnicode_CheckExact(cells[0])) price = decimal_from_str(cells[0], &k);
        else price = decimal_of(cache, cells[0]);
        if (price == NULL) goto fail;
        if (keys != NULL) {
            PyObject *key = isnan(k) ? text_key(cells[0]) : PyFloat_FromDouble(k);
            if (key == NULL || PyList_Append(keys, key) < 0) {
                Py_XDECREF(key);
                Py_DECREF(price);
                goto fail;
            }
            Py_DECREF(key);
        }
        PyObject *size = fast_decimals && PyUnicode_CheckExact(cells[1]) ? decimal_from_str(cells[1], NULL)
                                                                         : decimal_of(cache, cells[1]);
        if (size == NULL) {
            Py_DECREF(price);
            goto fail;
        }
        PyObject *level = PyTuple_New(2);
        if (level == NULL) {
            Py_DECREF(price);
            Py_DECREF(size);
            goto fail;
        }
        PyTuple_SET_ITEM(level, 0, price);
        PyTuple_SET_ITEM(level, 1, size);
        PyList_SET_ITEM(out, i, level);
    }
    Py_DECREF(rows);
    return out;
fail:
    Py_XDECREF(out); /* unfilled slots are NULL */
    Py_DECREF(rows);
    return NULL;
}

#define PLAIN_MAX 104
/* format(value, "f") of a Decimal written from its fields into buf (what str gives when it has no
 * exponent; a checksum's spelling), its length; -1 when it is not read here (not a Decimal made with the
 * checked layout, not finite, a positive exponent, longer than 100 characters) */
static Py_ssize_t plain_text(PyObject *value, char *buf) {
    if (!fast_decimals || !Py_IS_TYPE(value, (PyTypeObject *)Decimal)) return -1;
    DecimalLayout *d = (DecimalLayout *)value;
    if ((d->dec.flags & 14) || d->dec.exp > 0 || d->dec.len > 2 || d->dec.exp < -60) return -1;
    unsigned __int128 coef = d->dec.len == 2 ? (unsigned __int128)d->dec.data[1] * WORD + d->dec.data[0]
                                             : d->dec.data[0];
    char digits[40];
    int n = 0;
    do { /* least significant first */
        digits[n++] = (char)('0' + (int)(coef % 10));
        coef /= 10;
    } while (coef);
    int frac = (int)-d->dec.exp;
    Py_ssize_t len = 0;
    if (d->dec.flags & MPD_NEG) buf[len++] = '-';
    if (n <= frac) {
        buf[len++] = '0';
    } else {
        for (int i = n - 1; i >= frac; i--) buf[len++] = digits[i];
    }
    if (frac > 0) {
        buf[len++] = '.';
        for (int i = frac - 1; i >= 0; i--) buf[len++] = i < n ? digits[i] : '0';
    }
    return len;
}

/* The checksum text of one level without Python, or NULL with no exception set when the Python maker must
 * make it: a Decimal whose str has an exponent, or (Kraken v2) digits after the point other than the
 * instrument's precision. style 0: OKX "price:size"; style 1: Kraken, each number with '.' removed and
 * leading zeros stripped. */
static PyObject *fast_text(PyObject *price, PyObject *size, int style, int decimals[2]) {
    PyObject *parts[2] = {NULL, NULL};
    PyObject *out = NULL;
    char buf[256], plain[2][PLAIN_MAX];
    Py_ssize_t len = 0;
    for (int j = 0; j < 2; j++) {
        Py_ssize_t n = plain_text(j == 0 ? price : size, plain[j]);
        const char *text = plain[j];
        if (n < 0) { /* not read from the Decimal's fields: its str */
            parts[j] = PyObject_Str(j == 0 ? price : size);
            if (parts[j] == NULL) goto done;
            text = PyUnicode_AsUTF8AndSize(parts[j], &n);
            if (text == NULL) goto done;
        }
        if (memchr(text, 'E', n) != NULL || n > 100) goto done; /* the Python maker */
        if (style == 1) {
            const char *dot = memchr(text, '.', n);
            if (decimals[j] >= 0 && (dot == NULL ? decimals[j] != 0 : (text + n - dot - 1) != decimals[j]))
                goto done;
            int leading = 1;
            for (Py_ssize_t i = 0; i < n; i++) {
                char c = text[i];
                if (c == '.' || (leading && c == '0')) continue;
                leading = 0;
                buf[len++] = c;
            }
        } else {
            if (j == 1) buf[len++] = ':';
            memcpy(buf + len, text, n);
            len += n;
        }
    }
    out = PyUnicode_DecodeASCII(buf, len, NULL);
done:
    Py_XDECREF(parts[0]);
    Py_XDECREF(parts[1]);
    return out;
}

/* top_texts(prices, sizes, texts, n, best_last, style, price_decimals, qty_decimals, make) -> [str, ...]:
 * the best n levels' checksum texts, best first (bids: best_last, the end of the ascending lists); a level
 * without its text gets it from fast_text, else from make(price, size), and keeps it in texts. */
static PyObject *top_texts(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]) ||
        !PyList_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "top_texts(prices, sizes, texts, n, best_last, style, price_decimals, qty_decimals, make)");
        return NULL;
    }
    PyObject *prices = args[0], *sizes = args[1], *texts = args[2], *make = args[8];
    Py_ssize_t want = PyLong_AsSsize_t(args[3]);
    int best_last = PyObject_IsTrue(args[4]);
    int style = (int)PyLong_AsLong(args[5]);
    int decimals[2] = {args[6] == Py_None ? -1 : (int)PyLong_AsLong(args[6]),
                       args[7] == Py_None ? -1 : (int)PyLong_AsLong(args[7])};
    if (PyErr_Occurred()) return NULL;
    if (style != 0 && style != 1) { /* another style's texts are make's: fast_text would write OKX's */
        PyErr_Format(PyExc_ValueError, "top_texts: style 0 (OKX) or 1 (Kraken), not %d", style);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(prices);
    if (PyList_GET_SIZE(sizes) != n || PyList_GET_SIZE(texts) != n) {
        PyErr_SetString(PyExc_ValueError, "prices, sizes and texts differ in length");
        return NULL;
    }
    Py_ssize_t count = want < n ? want : n;
    if (count < 0) count = 0;
    PyObject *out = PyList_New(count);
    if (out == NULL) return NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        Py_ssize_t i = best_last ? n - 1 - k : k;
        PyObject *text = PyList_GET_ITEM(texts, i);
        if (text == Py_None) {
            /* held: str() of a price that is not a Decimal, and make, are Python code that may change the lists */
            PyObject *price = Py_NewRef(PyList_GET_ITEM(prices, i)), *size = Py_NewRef(PyList_GET_ITEM(sizes, i));
            text = fast_text(price, size, style, decimals);
            if (text == NULL && !PyErr_Occurred()) text = PyObject_CallFunctionObjArgs(make, price, size, NULL);
            Py_DECREF(price);
            Py_DECREF(size);
            if (text != NULL && !PyUnicode_Check(text)) {
                Py_CLEAR(text);
                PyErr_SetString(PyExc_TypeError, "a level's checksum text is a str");
            }
            if (text != NULL &&
                (PyList_GET_SIZE(prices) != n || PyList_GET_SIZE(sizes) != n || PyList_GET_SIZE(texts) != n)) {
                Py_CLEAR(text);
                PyErr_SetString(PyExc_RuntimeError, "a book side changed while its checksum texts were made");
            }
            if (text == NULL || PyList_SetItem(texts, i, Py_NewRef(text)) < 0) { /* drops the None */
                Py_XDECREF(text);
                Py_DECREF(out);
                return NULL;
            }
        } else {
            Py_INCREF(text);
        }
        PyList_SET_ITEM(out, k, text);
    }
    return out;
}

/* pairs(items, first, second) -> [(item.first, item.second), ...]: Kraken v2's typed levels (msgspec
 * Structs with price and qty) as the (price, size) tuples the book takes, without a Python loop. Each value
 * is a Decimal (a JSON number with a fraction, made by the decoder's float_hook) or an int (one without:
 * made a Decimal here); anything else is a TypeError (the frame then takes Kraken's general path). */
static PyObject *pairs(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_CheckExact(args[0]) || !PyUnicode_Check(args[1]) || !PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "pairs(items: list, first: str, second: str)");
        return NULL;
    }
    PyObject *items = args[0];
    PyObject *out = PyList_New(PyList_GET_SIZE(items));
    if (out == NULL) return NULL;
    Py_ssize_t i = 0, made = PyList_GET_SIZE(out);
    /* an attribute may be Python code that changes the list: it is read by index as the Python loop reads
     * it (stopping where it ends now), each item held while its attributes are read */
    for (; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = Py_NewRef(PyList_GET_ITEM(items, i));
        PyObject *level = PyTuple_New(2);
        if (level == NULL) {
            Py_DECREF(item);
            goto fail;
        }
        for (int j = 0; j < 2; j++) {
            PyObject *value = PyObject_GetAttr(item, args[1 + j]);
            if (value != NULL && PyLong_CheckExact(value)) { /* a JSON number without a fraction: Decimal(int) */
                Py_SETREF(value, PyObject_CallOneArg(Decimal, value));
            } else if (value != NULL && !Py_IS_TYPE(value, (PyTypeObject *)Decimal)) {
                PyErr_Format(PyExc_TypeError, "a price or quantity is a number, not %.50s", Py_TYPE(value)->tp_name);
                Py_CLEAR(value);
            }
            if (value == NULL) {
                Py_DECREF(item);
                Py_DECREF(level); /* its unfilled slot is NULL */
                goto fail;
            }
            PyTuple_SET_ITEM(level, j, value);
        }
        Py_DECREF(item);
        if (i < made) {
            PyList_SET_ITEM(out, i, level);
        } else {
            int bad = PyList_Append(out, level);
            Py_DECREF(level);
            if (bad < 0) goto fail;
        }
    }
    if (i < made && PyList_SetSlice(out, i, made, NULL) < 0) goto fail; /* the list was shortened */
    return out;
fail:
    Py_DECREF(out); /* unfilled slots are NULL */
    return NULL;
}

/* ordered_side(levels) -> (prices, sizes) ascending with zero sizes dropped, when the non-zero levels'
 * prices are strictly ascending or strictly descending (a snapshot as exchanges send it: one Decimal compare
 * per neighbour); None otherwise, and cex.book sorts them. */
static PyObject *ordered_side(PyObject *self, PyObject *arg) {
    PyObject *levels = PySequence_Fast(arg, "levels: a sequence of (price, size)");
    if (levels == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(levels), kept = 0;
    PyObject *prices = PyList_New(n), *sizes = PyList_New(n), *result = NULL;
    PyObject *last = NULL, *level = NULL;
    int direction = 0;   /* 1 ascending, -1 descending, 0 not known yet */
    int decimals = 1;    /* every kept price and size is a Decimal */
    if (prices == NULL || sizes == NULL) goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_CLEAR(level); /* the previous one */
        /* a size's __bool__, a price's __lt__ (not a Decimal) are Python code that may change the list: a
         * list changed here is left to the Python sort, which reads it as it is now */
        if (PySequence_Fast_GET_SIZE(levels) != n) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        level = Py_NewRef(PySequence_Fast_GET_ITEM(levels, k));
        if (!PyTuple_Check(level) || PyTuple_GET_SIZE(level) != 2) {
            PyErr_SetString(PyExc_TypeError, "a level is a (price, size) tuple");
            goto done;
        }
        PyObject *price = PyTuple_GET_ITEM(level, 0), *size = PyTuple_GET_ITEM(level, 1);
        int nonzero = PyObject_IsTrue(size);
        if (nonzero < 0) goto done;
        if (!nonzero) continue;
        decimals &= Py_IS_TYPE(price, (PyTypeObject *)Decimal) && Py_IS_TYPE(size, (PyTypeObject *)Decimal);
        if (last != NULL) {
            double a, b;
            int up, down;
            if (decimal_key(last, &a) && decimal_key(price, &b) && a != b) { /* keys differ: so do prices */
                up = a < b;
                down = !up;
            } else {
                up = PyObject_RichCompareBool(last, price, Py_LT);
                if (up < 0) goto done;
                down = up ? 0 : PyObject_RichCompareBool(last, price, Py_GT);
                if (down < 0) goto done;
            }
            int step = up ? 1 : (down ? -1 : 0);
            if (step == 0 || (direction != 0 && step != direction)) {
                result = Py_NewRef(Py_None); /* not strictly ordered: sorted in Python */
                goto done;
            }
            direction = step;
        }
        last = price; /* held by prices */
        PyList_SET_ITEM(prices, kept, Py_NewRef(price));
        PyList_SET_ITEM(sizes, kept, Py_NewRef(size));
        kept++;
    }
    if (PySequence_Fast_GET_SIZE(levels) != n) { /* changed by the last level's __bool__ or __lt__ */
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (PyList_SetSlice(prices, kept, n, NULL) < 0 || PyList_SetSlice(sizes, kept, n, NULL) < 0) goto done;
    if (direction < 0 && (PyList_Reverse(prices) < 0 || PyList_Reverse(sizes) < 0)) goto done;
    /* a book side's lists of Decimals only (no cycle can run through them): out of the cycle collector,
     * which would otherwise walk a snapshot's thousands of items at every young collection until they age;
     * lists of anything else stay tracked (a cycle through them must be collectable) */
    if (decimals) {
        PyObject_GC_UnTrack(prices);
        PyObject_GC_UnTrack(sizes);
    }
    result = PyTuple_Pack(2, prices, sizes);
done:
    Py_XDECREF(level);
    Py_XDECREF(prices); /* unfilled slots are NULL: safe to free */
    Py_XDECREF(sizes);
    Py_DECREF(levels);
    return result;
}

/* book_json(frame) -> dict | None: a JSON object frame read without a general JSON decoder, its book sides
 * already levels. Binance's frames (REST depth snapshots of thousands of levels, depthUpdate events) are
 * objects of ints, short strings and sides [["price","qty"], ...]; a general decoder makes a str per number
 * and a list per row, then row_levels makes the Decimals. Here each [str, str] row becomes the (Decimal,
 * Decimal) level straight from the bytes (make_decimal: exactly Decimal(text)). Read: objects, ints of at
 * most 18 digits, true/false/null, strings of printable ASCII without escapes, arrays that are empty or all
 * [str, str] rows of plain decimals. Anything else (floats, escapes, non-ASCII, other arrays, bad JSON, the
 * Decimal layout check failed) returns None, and the caller decodes the frame as before: what is read here
 * is what orjson + row_levels give, and what is not is left to them, errors included. */
typedef struct {
    const unsigned char *at, *end;
    /* level_key[0] NULL: sides are [str, str] rows; else a side is an array of objects {k0: number, k1: number}
     * (exactly these keys, in this order; Kraken v2's {"price", "qty"}) and rows are not read */
    const char *level_key[2];
    size_t level_len[2];
} Scan;

#define SCAN_DEPTH 8
#define FALLBACK NULL /* returned with no exception set: not this reader's shape */

static inline void skip_space(Scan *s) {
    while (s->at < s->end && (*s->at == ' ' || *s->at == '\n' || *s->at == '\r' || *s->at == '\t')) s->at++;
}

/* 1 for the bytes a string is read with here: printable ASCII but the quote and the backslash */
static unsigned char PLAIN_BYTE[256];

static void init_plain_bytes(void) {
    for (int c = 0x20; c <= 0x7e; c++) PLAIN_BYTE[c] = c != '"' && c != '\\';
}

/* a string's bytes (the quotes excluded) when all are printable ASCII without an escape; 0 otherwise */
static int scan_text(Scan *s, const char **text, Py_ssize_t *len) {
    if (s->at >= s->end || *s->at != '"') return 0;
    const unsigned char *start = ++s->at;
    while (s->at < s->end && PLAIN_BYTE[*s->at]) s->at++;
    if (s->at >= s->end || *s->at != '"') return 0;
    *text = (const char *)start;
    *len = s->at - start;
    s->at++;
    return 1;
}

static PyObject *scan_value(Scan *s, int depth);

/* [] or [["p","q"], ...] -> [(Decimal, Decimal), ...] */
static PyObject *scan_levels(Scan *s) {
    s->at++; /* '[' */
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    skip_space(s);
    if (s->at < s->end && *s->at == ']') {
        s->at++;
        return out;
    }
    for (;;) {
        skip_space(s);
        if (s->at >= s->end || *s->at != '[') goto fallback;
        s->at++;
        PyObject *pair[2] = {NULL, NULL};
        for (int j = 0; j < 2; j++) {
            const char *text;
            Py_ssize_t len;
            Parsed p;
            skip_space(s);
            if (!scan_text(s, &text, &len) || !parse_plain(text, len, &p)) {
                Py_XDECREF(pair[0]);
                goto fallback;
            }
            pair[j] = make_decimal(&p);
            if (pair[j] == NULL) {
                Py_XDECREF(pair[0]);
                goto fail;
            }
            skip_space(s);
            if (s->at >= s->end || *s->at != (j == 0 ? ',' : ']')) {
                Py_DECREF(pair[0]);
                Py_XDECREF(pair[1]);
                goto fallback;
            }
            s->at++;
        }
        PyObject *level = PyTuple_New(2);
        if (level == NULL) {
            Py_DECREF(pair[0]);
            Py_DECREF(pair[1]);
            goto fail;
        }
        PyTuple_SET_ITEM(level, 0, pair[0]);
        PyTuple_SET_ITEM(level, 1, pair[1]);
        int bad = PyList_Append(out, level);
        Py_DECREF(level);
        if (bad < 0) goto fail;
        skip_space(s);
        if (s->at < s->end && *s->at == ',') {
            s->at++;
            continue;
        }
        if (s->at < s->end && *s->at == ']') {
            s->at++;
            /* Decimals and tuples of them only: nothing for the cycle collector to walk */
            PyObject_GC_UnTrack(out);
            return out;
        }
        goto fallback;
    }
fallback:
    Py_DECREF(out);
    return FALLBACK;
fail:
    Py_DECREF(out);
    return NULL;
}

/* -?(0|[1-9][0-9]*) of at most 18 digits, not followed by a fraction or an exponent */
static PyObject *scan_int(Scan *s) {
    int neg = 0;
    if (*s->at == '-') {
        neg = 1;
        s->at++;
    }
    const unsigned char *start = s->at;
    long long value = 0;
    for (; s->at < s->end && (unsigned)(*s->at - '0') < 10; s->at++)
        if (s->at - start < 18) value = value * 10 + (*s->at - '0'); /* past 18 digits: declined below */
    Py_ssize_t n = s->at - start;
    if (n == 0 || n > 18 || (n > 1 && *start == '0') || (neg && value == 0)) return FALLBACK;
    if (s->at < s->end && (*s->at == '.' || *s->at == 'e' || *s->at == 'E')) return FALLBACK;
    return PyLong_FromLongLong(neg ? -value : value);
}

/* a JSON number as a level's value: -?(0|[1-9][0-9]*)(.[0-9]+)?, its Decimal from its text, what the Kraken
 * decoder makes (float_hook(text) for a fraction, Decimal(int) for an integer); an exponent, "-0" (an int 0,
 * whose Decimal has no sign) or more than 38 digits: FALLBACK */
static PyObject *scan_level_number(Scan *s) {
    const unsigned char *start = s->at;
    if (s->at < s->end && *s->at == '-') s->at++;
    const unsigned char *digits = s->at;
    while (s->at < s->end && (unsigned)(*s->at - '0') < 10) s->at++;
    Py_ssize_t whole = s->at - digits;
    if (whole == 0 || (whole > 1 && *digits == '0')) return FALLBACK;
    int fraction = 0;
    if (s->at < s->end && *s->at == '.') {
        const unsigned char *frac = ++s->at;
        while (s->at < s->end && (unsigned)(*s->at - '0') < 10) s->at++;
        if (s->at == frac) return FALLBACK;
        fraction = 1;
    }
    if (s->at < s->end && (*s->at == 'e' || *s->at == 'E')) return FALLBACK;
    if (!fraction && *start == '-' && whole == 1 && *digits == '0') return FALLBACK;
    Parsed p;
    if (!parse_plain((const char *)start, s->at - start, &p)) return FALLBACK;
    return make_decimal(&p);
}

static int scan_key(Scan *s, const char *key, size_t key_len) {
    const char *text;
    Py_ssize_t len;
    skip_space(s);
    if (!scan_text(s, &text, &len) || (size_t)len != key_len || memcmp(text, key, len) != 0) return 0;
    skip_space(s);
    if (s->at >= s->end || *s->at != ':') return 0;
    s->at++;
    skip_space(s);
    return 1;
}

/* {k0: number, k1: number} -> (Decimal, Decimal): 1 made; 0 not a level object (position restored); -1
 * FALLBACK for the frame (an exception set when it was an error) */
static int scan_level_object(Scan *s, PyObject **out) {
    const unsigned char *start = s->at;
    PyObject *pair[2] = {NULL, NULL};
    s->at++; /* '{' */
    for (int j = 0; j < 2; j++) {
        if (!scan_key(s, s->level_key[j], s->level_len[j])) goto not_level;
        pair[j] = scan_level_number(s);
        if (pair[j] == NULL) {
            Py_XDECREF(pair[0]);
            return -1;
        }
        skip_space(s);
        if (s->at >= s->end || *s->at != (j == 0 ? ',' : '}')) goto not_level;
        s->at++;
    }
    *out = PyTuple_New(2);
    if (*out == NULL) goto error;
    PyTuple_SET_ITEM(*out, 0, pair[0]);
    PyTuple_SET_ITEM(*out, 1, pair[1]);
    return 1;
not_level:
    Py_XDECREF(pair[0]);
    Py_XDECREF(pair[1]);
    s->at = start;
    return 0;
error:
    Py_XDECREF(pair[0]);
    Py_XDECREF(pair[1]);
    return -1;
}

static PyObject *scan_object(Scan *s, int depth);

/* [...] when sides are objects: [] ; all level objects -> levels; all other objects -> [dict, ...]; anything
 * else (a mix, rows, scalars) FALLBACK */
static PyObject *scan_object_array(Scan *s, int depth) {
    s->at++; /* '[' */
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    int kind = 0; /* 1 levels, 2 objects */
    skip_space(s);
    if (s->at < s->end && *s->at == ']') {
        s->at++;
        return out;
    }
    for (;;) {
        skip_space(s);
        if (s->at >= s->end || *s->at != '{') goto fallback;
        PyObject *item = NULL;
        int made = kind == 2 ? 0 : scan_level_object(s, &item);
        if (made < 0) goto fallback_or_fail;
        if (made == 0) {
            item = scan_object(s, depth + 1);
            if (item == NULL) goto fallback_or_fail;
        }
        int this_kind = made ? 1 : 2;
        if (kind != 0 && kind != this_kind) {
            Py_DECREF(item);
            goto fallback;
        }
        kind = this_kind;
        int bad = PyList_Append(out, item);
        Py_DECREF(item);
        if (bad < 0) goto fail;
        skip_space(s);
        if (s->at < s->end && *s->at == ',') {
            s->at++;
            continue;
        }
        if (s->at < s->end && *s->at == ']') {
            s->at++;
            return out;
        }
        goto fallback;
    }
fallback_or_fail:
    if (PyErr_Occurred()) goto fail;
fallback:
    Py_DECREF(out);
    return FALLBACK;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *scan_object(Scan *s, int depth) {
    s->at++; /* '{' */
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    skip_space(s);
    if (s->at < s->end && *s->at == '}') {
        s->at++;
        return out;
    }
    for (;;) {
        const char *text;
        Py_ssize_t len;
        skip_space(s);
        if (!scan_text(s, &text, &len)) goto fallback;
        skip_space(s);
        if (s->at >= s->end || *s->at != ':') goto fallback;
        s->at++;
        skip_space(s);
        PyObject *value = scan_value(s, depth + 1);
        if (value == NULL) {
            if (PyErr_Occurred()) goto fail;
            goto fallback;
        }
        PyObject *key = PyUnicode_DecodeASCII(text, len, NULL);
        if (key == NULL) {
            Py_DECREF(value);
            goto fail;
        }
        int bad = PyDict_SetItem(out, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (bad < 0) goto fail;
        skip_space(s);
        if (s->at < s->end && *s->at == ',') {
            s->at++;
            continue;
        }
        if (s->at < s->end && *s->at == '}') {
            s->at++;
            return out;
        }
        goto fallback;
    }
fallback:
    Py_DECREF(out);
    return FALLBACK;
fail:
    Py_DECREF(out);
    return NULL;
}

static int scan_word(Scan *s, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(s->end - s->at) < n || memcmp(s->at, word, n) != 0) return 0;
    s->at += n;
    return 1;
}

static PyObject *scan_value(Scan *s, int depth) {
    if (s->at >= s->end || depth > SCAN_DEPTH) return FALLBACK;
    unsigned char c = *s->at;
    if (c == '{') return scan_object(s, depth);
    if (c == '[') {
        if (s->level_key[0] == NULL) return scan_levels(s);
        return scan_object_array(s, depth);
    }
    if (c == '"') {
        const char *text;
        Py_ssize_t len;
        if (!scan_text(s, &text, &len)) return FALLBACK;
        return PyUnicode_DecodeASCII(text, len, NULL);
    }
    if (c == '-' || (unsigned)(c - '0') < 10) return scan_int(s);
    if (scan_word(s, "true")) Py_RETURN_TRUE;
    if (scan_word(s, "false")) Py_RETURN_FALSE;
    if (scan_word(s, "null")) Py_RETURN_NONE;
    return FALLBACK;
}

/* book_json(frame[, price_key, size_key]) */
static PyObject *book_json(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *data;
    Py_ssize_t len;
    if (nargs != 1 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "book_json(frame[, price_key, size_key])");
        return NULL;
    }
    PyObject *frame = args[0];
    const char *level_key[2] = {NULL, NULL};
    Py_ssize_t level_len[2] = {0, 0}; /* a key's length as given, a NUL included (strlen would stop there) */
    if (nargs == 3) {
        for (int j = 0; j < 2; j++) {
            if (!PyUnicode_Check(args[1 + j]) ||
                (level_key[j] = PyUnicode_AsUTF8AndSize(args[1 + j], &level_len[j])) == NULL) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "book_json: the level keys are str");
                return NULL;
            }
        }
    }
    if (PyBytes_CheckExact(frame)) {
        data = PyBytes_AS_STRING(frame);
        len = PyBytes_GET_SIZE(frame);
    } else if (PyUnicode_CheckExact(frame)) {
        if (!PyUnicode_IS_COMPACT_ASCII(frame)) Py_RETURN_NONE; /* non-ASCII text: the general decoder */
        data = (const char *)PyUnicode_DATA(frame);
        len = PyUnicode_GET_LENGTH(frame);
    } else {
        Py_RETURN_NONE; /* a bytearray, a memoryview: the general decoder's */
    }
    if (!fast_decimals) Py_RETURN_NONE;
    Scan s = {(const unsigned char *)data,
              (const unsigned char *)data + len,
              {level_key[0], level_key[1]},
              {(size_t)level_len[0], (size_t)level_len[1]}};
    skip_space(&s);
    if (s.at >= s.end || *s.at != '{') Py_RETURN_NONE;
    PyObject *out = scan_object(&s, 0);
    if (out == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    skip_space(&s);
    if (s.at != s.end) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"apply_side", (PyCFunction)(void (*)(void))apply_side, METH_FASTCALL,
     "apply_side(keys, prices, sizes, texts, levels): L2Book.update for one side"},
    {"levels", (PyCFunction)(void (*)(void))levels, METH_FASTCALL,
     "levels(rows, cache) -> [(Decimal, Decimal), ...] from [[price, size, ...], ...] strings"},
    {"top_texts", (PyCFunction)(void (*)(void))top_texts, METH_FASTCALL,
     "top_texts(prices, sizes, texts, n, best_last, style, price_decimals, qty_decimals, make) -> [str]"},
    {"pairs", (PyCFunction)(void (*)(void))pairs, METH_FASTCALL,
     "pairs(items, first, second) -> [(item.first, item.second), ...]"},
    {"ordered_side", (PyCFunction)ordered_side, METH_O,
     "ordered_side(levels) -> (prices, sizes) ascending, or None when not strictly ordered"},
    {"book_json", (PyCFunction)(void (*)(void))book_json, METH_FASTCALL,
     "book_json(frame[, price_key, size_key]) -> dict with book sides as levels, or None: the general decoder's"},
    {"decimal", (PyCFunction)decimal, METH_O, "decimal(text) -> Decimal(text), made directly for a plain decimal"},
    {"fast_decimals", (PyCFunction)fast_decimals_on, METH_NOARGS,
     "fast_decimals() -> whether Decimals are made directly (the layout check passed)"},
    {"bind", (PyCFunction)bind, METH_O, "bind(cls): the record class whose slots deltas() fills"},
    {"deltas", (PyCFunction)(void (*)(void))deltas, METH_FASTCALL,
     "deltas(exchange, symbol, bids, asks, sequence, event_timestamp, atom_timestamp) -> [record, ...]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    init_plain_bytes();
    if (Decimal == NULL) {
        PyObject *decimal = PyImport_ImportModule("decimal");
        if (decimal == NULL) return NULL;
        Decimal = PyObject_GetAttrString(decimal, "Decimal");
        Py_DECREF(decimal);
        if (Decimal == NULL) return NULL;
        fast_decimals = PyType_Check(Decimal) && layout_matches();
    }
    return PyModule_Create(&module);
}
