/* The growable byte buffer of the C extensions that write bytes (records/_codec.c, api/_pagejson.c,
 * sinks/_copy.c): static inline functions, compiled into each extension (no shared library).
 *
 *     Buffer b;  buffer_init(&b);                        empty; the first growth allocates
 *     char small[2048];  buffer_init_inline(&b, small, sizeof small);
 *                                                        starts in the caller's storage (never freed), moved
 *                                                        to the heap when it outgrows it
 *     buffer_put(&b, text, size), buffer_reserve(&b, more) then write b.data[b.size++] directly
 *     buffer_finish(&b)                                  the bytes written as a bytes object; frees b
 *     buffer_free(&b)                                    on an error path
 *
 * Every function that can fail sets a Python exception (MemoryError, also when a size would overflow
 * Py_ssize_t) and returns -1 (NULL for buffer_finish). */
#ifndef DEXNODE_BUFFER_H
#define DEXNODE_BUFFER_H

#include <Python.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t size, capacity;
    char *start; /* the storage it starts in (the caller's, or none): data there is not freed */
} Buffer;

/* the first heap allocation of a buffer that starts empty */
#define BUFFER_FIRST_CAPACITY 4096

/* where an empty buffer points: never NULL, so a put of 0 bytes copies to a valid address without a test
 * on the hot path, and the bytes object of an empty buffer needs no special case */
static char buffer_nothing[1];

static inline void buffer_init(Buffer *b) {
    b->data = buffer_nothing;
    b->size = 0;
    b->capacity = 0;
    b->start = buffer_nothing;
}

static inline void buffer_init_inline(Buffer *b, char *storage, Py_ssize_t capacity) {
    b->data = storage;
    b->size = 0;
    b->capacity = capacity;
    b->start = storage;
}

static inline void buffer_free(Buffer *b) {
    if (b->data != b->start) PyMem_Free(b->data);
    b->data = b->start;
    b->size = 0;
}

/* room for `more` bytes after size: twice the capacity (at least BUFFER_FIRST_CAPACITY), or what is
 * needed if that is more. Out of line: the callers' inlined fast path is only the comparison. */
static Py_NO_INLINE int buffer_grow(Buffer *b, Py_ssize_t more) {
    if (more <= b->capacity - b->size) return 0;
    if (more < 0 || more > PY_SSIZE_T_MAX - b->size) { /* the size would overflow */
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t want = b->size + more;
    Py_ssize_t capacity = b->capacity == 0                  ? BUFFER_FIRST_CAPACITY
                          : b->capacity <= PY_SSIZE_T_MAX / 2 ? b->capacity * 2
                                                              : PY_SSIZE_T_MAX;
    if (capacity < want) capacity = want;
    char *data;
    if (b->data != b->start) {
        data = PyMem_Realloc(b->data, (size_t)capacity);
    } else { /* the storage it started in: copied to the heap */
        data = PyMem_Malloc((size_t)capacity);
        if (data != NULL && b->size) memcpy(data, b->start, (size_t)b->size);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->capacity = capacity;
    return 0;
}

static inline int buffer_reserve(Buffer *b, Py_ssize_t more) {
    if (more > b->capacity - b->size && buffer_grow(b, more) < 0) return -1;
    return 0;
}

static inline int buffer_put(Buffer *b, const char *text, Py_ssize_t size) {
    if (size > b->capacity - b->size && buffer_grow(b, size) < 0) return -1;
    memcpy(b->data + b->size, text, (size_t)size);
    b->size += size;
    return 0;
}

static inline PyObject *buffer_finish(Buffer *b) {
    PyObject *out = PyBytes_FromStringAndSize(b->data, b->size);
    buffer_free(b);
    return out;
}

#endif
