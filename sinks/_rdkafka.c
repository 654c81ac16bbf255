/* sinks._rdkafka: a Kafka producer that calls librdkafka directly, for sinks.kafka_producer.
 *
 * Through confluent-kafka, every message costs a Python call (argument parsing, a header list
 * converted, a per-message state allocated) and, once delivered, a delivery report that retakes the
 * GIL, builds a Message and calls back into Python, even with delivery.report.only.error (its
 * per-message state is freed there). Here a list of messages is produced in one call, librdkafka
 * pointing into the values instead of copying them (the send's Tracker holds the messages until each is
 * reported), and each delivery report only counts into its send's Tracker (C atomics, no GIL): the
 * waiter reads the counts.
 *
 * librdkafka is the one confluent-kafka's wheel bundles (confluent_kafka.libs/librdkafka-*.so.1, no
 * rdkafka.h installed): opened with dlopen by load(path), the few prototypes and struct layouts used
 * here declared by hand from rdkafka.h (stable ABI since librdkafka 1.0).
 *
 * Callbacks: the delivery reports, errors and logs are all served by rd_kafka_poll/rd_kafka_flush
 * (log.queue is set, so no log comes from librdkafka's own threads), which run with the GIL released;
 * errors and logs are queued here (bounded) and handed to Python by events().
 *
 * Optional: built by `make install` (setuptools ext-modules in pyproject.toml); sinks.kafka_producer
 * produces through confluent-kafka when it is missing. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

/* ---- librdkafka, declared by hand (rdkafka.h) ---- */
typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_conf_s rd_kafka_conf_t;
typedef struct rd_kafka_topic_s rd_kafka_topic_t;
typedef struct rd_kafka_topic_conf_s rd_kafka_topic_conf_t;
typedef struct rd_kafka_headers_s rd_kafka_headers_t;
typedef struct rd_kafka_queue_s rd_kafka_queue_t;
typedef int rd_kafka_resp_err_t;

typedef struct rd_kafka_message_s {
    rd_kafka_resp_err_t err;
    rd_kafka_topic_t *rkt;
    int32_t partition;
    void *payload;
    size_t len;
    void *key;
    size_t key_len;
    int64_t offset;
    void *_private;
} rd_kafka_message_t;

enum { RD_KAFKA_PRODUCER = 0 };
enum { RD_KAFKA_CONF_OK = 0 };
enum {
    VTYPE_END = 0,
    VTYPE_RKT = 2,
    VTYPE_PARTITION = 3,
    VTYPE_VALUE = 4,
    VTYPE_KEY = 5,
    VTYPE_OPAQUE = 6,
    VTYPE_MSGFLAGS = 7,
    VTYPE_HEADERS = 10,
};
enum { PURGE_F_QUEUE = 0x1, PURGE_F_INFLIGHT = 0x2 };
enum { ERR_FATAL = -150, ERR_QUEUE_FULL = -184 };

typedef void (*dr_msg_cb_t)(rd_kafka_t *, const rd_kafka_message_t *, void *);
typedef void (*error_cb_t)(rd_kafka_t *, int, const char *, void *);
typedef void (*log_cb_t)(const rd_kafka_t *, int, const char *, const char *);

static struct {
    rd_kafka_conf_t *(*conf_new)(void);
    int (*conf_set)(rd_kafka_conf_t *, const char *, const char *, char *, size_t);
    void (*conf_set_dr_msg_cb)(rd_kafka_conf_t *, dr_msg_cb_t);
    void (*conf_set_error_cb)(rd_kafka_conf_t *, error_cb_t);
    void (*conf_set_log_cb)(rd_kafka_conf_t *, log_cb_t);
    void (*conf_set_opaque)(rd_kafka_conf_t *, void *);
    void (*conf_destroy)(rd_kafka_conf_t *);
    rd_kafka_t *(*new_)(int, rd_kafka_conf_t *, char *, size_t);
    void (*destroy)(rd_kafka_t *);
    void *(*opaque)(const rd_kafka_t *);
    int (*poll)(rd_kafka_t *, int);
    rd_kafka_resp_err_t (*flush)(rd_kafka_t *, int);
    int (*outq_len)(rd_kafka_t *);
    rd_kafka_resp_err_t (*purge)(rd_kafka_t *, int);
    rd_kafka_resp_err_t (*fatal_error)(rd_kafka_t *, char *, size_t);
    const char *(*err2str)(rd_kafka_resp_err_t);
    rd_kafka_topic_t *(*topic_new)(rd_kafka_t *, const char *, rd_kafka_topic_conf_t *);
    void (*topic_destroy)(rd_kafka_topic_t *);
    rd_kafka_headers_t *(*headers_new)(size_t);
    rd_kafka_resp_err_t (*header_add)(rd_kafka_headers_t *, const char *, ssize_t, const void *, ssize_t);
    void (*headers_destroy)(rd_kafka_headers_t *);
    rd_kafka_resp_err_t (*producev)(rd_kafka_t *, ...);
    rd_kafka_queue_t *(*queue_get_main)(rd_kafka_t *);
    rd_kafka_resp_err_t (*set_log_queue)(rd_kafka_t *, rd_kafka_queue_t *);
    void (*queue_destroy)(rd_kafka_queue_t *);
    const char *(*version_str)(void);
} rk;
static void *library = NULL;

/* ---- a send's delivery counts, shared with librdkafka's reports (no GIL there) ---- */
typedef struct {
    long refs;      /* the Python Tracker + one per message in flight */
    long delivered;
    long failed;
    int first_err;  /* set once (err_set 0 -> 1) */
    int err_set;
    char errstr[512];
} Counts;

static void counts_release(Counts *c) {
    if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0) free(c);
}

/* A send's tracker: its counts, and what its messages' payloads point into (librdkafka does not copy
 * them: MSG_F_COPY is not set), kept until every one of them is reported. */
typedef struct {
    PyObject_HEAD
    Counts *counts;
    PyObject *held; /* list of the message lists' slices produced with this tracker */
} Tracker;

/* Trackers gone while some of their messages were still in librdkafka's hands: their payloads are kept
 * here (GIL-protected) until the last report, then released by sweep() under the GIL. */
typedef struct Orphan {
    struct Orphan *next;
    Counts *counts; /* one reference of its own */
    PyObject *held;
} Orphan;
static Orphan *orphans = NULL;

static void sweep(void) {
    Orphan **at = &orphans;
    while (*at != NULL) {
        Orphan *o = *at;
        if (__atomic_load_n(&o->counts->refs, __ATOMIC_ACQUIRE) == 1) { /* only ours left: all reported */
            *at = o->next;
            Py_DECREF(o->held);
            counts_release(o->counts);
            free(o);
        } else {
            at = &o->next;
        }
    }
}

static PyObject *tracker_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) || (kwargs != NULL && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "Tracker() takes no arguments");
        return NULL;
    }
    Tracker *t = (Tracker *)type->tp_alloc(type, 0);
    if (t == NULL) return NULL;
    t->counts = calloc(1, sizeof(Counts));
    if (t->counts == NULL) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    t->counts->refs = 1;
    t->held = PyList_New(0);
    if (t->held == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static void tracker_dealloc(PyObject *self) {
    Tracker *t = (Tracker *)self;
    if (t->counts != NULL) {
        if (t->held != NULL && __atomic_load_n(&t->counts->refs, __ATOMIC_ACQUIRE) > 1) {
            /* messages still in flight point into held: it outlives this tracker until they are reported */
            Orphan *o = malloc(sizeof(Orphan));
            if (o != NULL) {
                __atomic_add_fetch(&t->counts->refs, 1, __ATOMIC_ACQ_REL);
                o->counts = t->counts;
                o->held = t->held;
                o->next = orphans;
                orphans = o;
            } /* else leaked, never freed under librdkafka */
            t->held = NULL;
        }
        counts_release(t->counts);
    }
    Py_XDECREF(t->held);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *tracker_reported(PyObject *self, void *closure) {
    Counts *c = ((Tracker *)self)->counts;
    return PyLong_FromLong(__atomic_load_n(&c->delivered, __ATOMIC_ACQUIRE) +
                           __atomic_load_n(&c->failed, __ATOMIC_ACQUIRE));
}

static PyObject *tracker_failed(PyObject *self, void *closure) {
    return PyLong_FromLong(__atomic_load_n(&((Tracker *)self)->counts->failed, __ATOMIC_ACQUIRE));
}

/* (code, text) of the first failed delivery, or None */
static PyObject *tracker_first_error(PyObject *self, void *closure) {
    Counts *c = ((Tracker *)self)->counts;
    if (__atomic_load_n(&c->err_set, __ATOMIC_ACQUIRE) != 2) Py_RETURN_NONE;
    return Py_BuildValue("(is)", c->first_err, c->errstr);
}

static PyGetSetDef tracker_getset[] = {
    {"reported", tracker_reported, NULL, "delivery reports received (delivered + failed)", NULL},
    {"failed", tracker_failed, NULL, "failed deliveries", NULL},
    {"first_error", tracker_first_error, NULL, "(code, text) of the first failure, or None", NULL},
    {NULL},
};

static PyTypeObject TrackerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sinks._rdkafka.Tracker",
    .tp_basicsize = sizeof(Tracker),
    .tp_dealloc = tracker_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Tracker(): the delivery reports of the messages produced with it",
    .tp_getset = tracker_getset,
    .tp_new = tracker_new,
};

static void on_delivery(rd_kafka_t *handle, const rd_kafka_message_t *m, void *opaque) {
    Counts *c = m->_private;
    if (c == NULL) return;
    if (m->err == 0) {
        __atomic_add_fetch(&c->delivered, 1, __ATOMIC_ACQ_REL);
    } else {
        int expected = 0;
        if (__atomic_compare_exchange_n(&c->err_set, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            c->first_err = m->err;
            snprintf(c->errstr, sizeof c->errstr, "%s", rk.err2str(m->err));
            __atomic_store_n(&c->err_set, 2, __ATOMIC_RELEASE);
        }
        __atomic_add_fetch(&c->failed, 1, __ATOMIC_ACQ_REL);
    }
    counts_release(c);
}

/* ---- errors and logs, queued for Python ---- */
#define MAX_EVENTS 1000

typedef struct Event {
    struct Event *next;
    int kind;  /* 0 error, 1 log */
    int code;  /* error code, or syslog level */
    char text[];
} Event;

typedef struct {
    pthread_mutex_t lock;
    Event *head, *tail;
    int count;
    long dropped;
} Events;

static void events_push(Events *q, int kind, int code, const char *a, const char *b) {
    size_t size = strlen(a) + (b ? strlen(b) + 2 : 0) + 1;
    pthread_mutex_lock(&q->lock);
    if (q->count >= MAX_EVENTS) {
        q->dropped++;
        pthread_mutex_unlock(&q->lock);
        return;
    }
    Event *e = malloc(sizeof(Event) + size);
    if (e == NULL) {
        q->dropped++;
        pthread_mutex_unlock(&q->lock);
        return;
    }
    e->next = NULL;
    e->kind = kind;
    e->code = code;
    if (b)
        snprintf(e->text, size, "%s: %s", a, b);
    else
        memcpy(e->text, a, size);
    if (q->tail)
        q->tail->next = e;
    else
        q->head = e;
    q->tail = e;
    q->count++;
    pthread_mutex_unlock(&q->lock);
}

typedef struct {
    PyObject_HEAD
    rd_kafka_t *handle;
    PyObject *topics; /* str -> int (rd_kafka_topic_t *) */
    Events events;
    int busy;         /* calls running with the GIL released (under the GIL) */
} Producer;

static void on_error(rd_kafka_t *handle, int err, const char *reason, void *opaque) {
    Producer *p = opaque;
    events_push(&p->events, 0, err, reason, NULL);
}

static void on_log(const rd_kafka_t *handle, int level, const char *fac, const char *buf) {
    Producer *p = rk.opaque(handle);
    if (p != NULL) events_push(&p->events, 1, level, fac, buf);
}

static int loaded(void) {
    if (library != NULL) return 1;
    PyErr_SetString(PyExc_RuntimeError, "librdkafka is not loaded (sinks._rdkafka.load)");
    return 0;
}

/* Producer(config: list of (name, value) str pairs) */
static PyObject *producer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *config;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Producer takes its config as one positional argument");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!:Producer", &PyList_Type, &config)) return NULL;
    if (!loaded()) return NULL;
    Producer *p = (Producer *)type->tp_alloc(type, 0);
    if (p == NULL) return NULL;
    pthread_mutex_init(&p->events.lock, NULL);
    p->topics = PyDict_New();
    if (p->topics == NULL) goto fail;
    char errstr[512];
    rd_kafka_conf_t *conf = rk.conf_new();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(config); i++) {
        const char *name, *value;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(config, i), "ss:setting", &name, &value)) {
            rk.conf_destroy(conf);
            goto fail;
        }
        if (rk.conf_set(conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
            rk.conf_destroy(conf);
            PyErr_Format(PyExc_ValueError, "%s", errstr);
            goto fail;
        }
    }
    if (rk.conf_set(conf, "log.queue", "true", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        rk.conf_destroy(conf);
        PyErr_Format(PyExc_ValueError, "%s", errstr);
        goto fail;
    }
    rk.conf_set_dr_msg_cb(conf, on_delivery);
    rk.conf_set_error_cb(conf, on_error);
    rk.conf_set_log_cb(conf, on_log);
    rk.conf_set_opaque(conf, p);
    rd_kafka_t *handle;
    Py_BEGIN_ALLOW_THREADS
    handle = rk.new_(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    Py_END_ALLOW_THREADS
    if (handle == NULL) {
        rk.conf_destroy(conf);
        PyErr_Format(PyExc_ValueError, "%s", errstr);
        goto fail;
    }
    p->handle = handle;
    rd_kafka_queue_t *main_queue = rk.queue_get_main(handle);
    rk.set_log_queue(handle, main_queue);
    rk.queue_destroy(main_queue);
    return (PyObject *)p;
fail:
    Py_DECREF(p);
    return NULL;
}

static int usable(Producer *p) {
    if (p->handle != NULL) return 1;
    PyErr_SetString(PyExc_RuntimeError, "the producer is closed");
    return 0;
}

static rd_kafka_topic_t *topic_of(Producer *p, PyObject *name) {
    PyObject *known = PyDict_GetItemWithError(p->topics, name);
    if (known != NULL) return PyLong_AsVoidPtr(known);
    if (PyErr_Occurred()) return NULL;
    const char *text = PyUnicode_AsUTF8(name);
    if (text == NULL) return NULL;
    rd_kafka_topic_t *topic = rk.topic_new(p->handle, text, NULL);
    if (topic == NULL) {
        PyErr_Format(PyExc_ValueError, "topic %R: not a valid topic", name);
        return NULL;
    }
    PyObject *pointer = PyLong_FromVoidPtr(topic);
    if (pointer == NULL || PyDict_SetItem(p->topics, name, pointer) < 0) {
        Py_XDECREF(pointer);
        rk.topic_destroy(topic);
        return NULL;
    }
    Py_DECREF(pointer);
    return topic;
}

/* The bytes of a str or bytes (a header's value), or NULL with size -1 for None. */
static int bytes_of(PyObject *v, const char **data, Py_ssize_t *size) {
    if (v == Py_None) {
        *data = NULL;
        *size = -1;
        return 0;
    }
    if (PyBytes_Check(v)) {
        *data = PyBytes_AS_STRING(v);
        *size = PyBytes_GET_SIZE(v);
        return 0;
    }
    if (PyUnicode_Check(v)) {
        *data = PyUnicode_AsUTF8AndSize(v, size);
        return *data == NULL ? -1 : 0;
    }
    PyErr_Format(PyExc_TypeError, "a header value must be bytes, str or None, not %.100s", Py_TYPE(v)->tp_name);
    return -1;
}

static rd_kafka_headers_t *headers_of(PyObject *headers) {
    if (!PyList_Check(headers)) {
        PyErr_Format(PyExc_TypeError, "headers must be a list of (name, value), not %.100s",
                     Py_TYPE(headers)->tp_name);
        return NULL;
    }
    rd_kafka_headers_t *out = rk.headers_new(PyList_GET_SIZE(headers));
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        const char *name, *value;
        Py_ssize_t name_size, value_size;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0))) {
            PyErr_SetString(PyExc_TypeError, "a header must be a (str, value) tuple");
            goto fail;
        }
        name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &name_size);
        if (name == NULL || bytes_of(PyTuple_GET_ITEM(pair, 1), &value, &value_size) < 0) goto fail;
        rk.header_add(out, name, name_size, value, value_size);
    }
    return out;
fail:
    rk.headers_destroy(out);
    return NULL;
}

/* produce(messages, start, tracker, topics=None) -> the index of the first message not produced:
 * len(messages) when all were, less when librdkafka's queue is full (poll, then produce from there).
 * messages: a list of (topic str, key, value, headers list, partition int), key and value bytes, str or
 * None; with topics (a dict kind -> topic), a list of (kind, key, value, headers), each produced to
 * topics[kind] with the partitioner's partition (a batch's records on one flavour, no tuple each). A
 * malformed message raises TypeError; librdkafka refusing one, ProduceError(code, text): the messages
 * before it may have been produced (the send fails either way).
 *
 * In chunks: each message's pointers are collected with the GIL held (its topic handle, its headers
 * made), then librdkafka copies and queues the chunk with the GIL released, so the event loop runs
 * meanwhile. The bytes stay alive and unchanged: the chunk's slice holds them (the tracker holds the
 * slice until every report), and bytes are immutable. */
static PyObject *ProduceError;

#define CHUNK 1024

typedef struct {
    rd_kafka_topic_t *topic;
    rd_kafka_headers_t *headers;
    const char *key, *value;
    size_t key_size, value_size;
    int32_t partition;
} Pending;

/* A key or value: bytes, str (its UTF-8) or None (no key, a null value), as confluent-kafka takes them. */
static int payload_of(PyObject *v, const char **data, size_t *size) {
    if (PyBytes_Check(v)) {
        *data = PyBytes_AS_STRING(v);
        *size = (size_t)PyBytes_GET_SIZE(v);
        return 0;
    }
    if (v == Py_None) {
        *data = NULL;
        *size = 0;
        return 0;
    }
    if (PyUnicode_Check(v)) {
        Py_ssize_t length;
        *data = PyUnicode_AsUTF8AndSize(v, &length); /* cached in the str, which the list holds */
        *size = (size_t)length;
        return *data == NULL ? -1 : 0;
    }
    PyErr_Format(PyExc_TypeError, "a message's key and value are bytes, str or None, not %.100s",
                 Py_TYPE(v)->tp_name);
    return -1;
}

/* topics NULL: m is (topic, key, value, headers, partition); else (kind, key, value, headers), its topic
 * topics[kind], its partition the partitioner's */
static int collect(Producer *p, PyObject *m, PyObject *topics, Pending *out) {
    Py_ssize_t size = topics == NULL ? 5 : 4;
    if (!PyTuple_Check(m) || PyTuple_GET_SIZE(m) != size) {
        PyErr_SetString(PyExc_TypeError, topics == NULL ? "a message is (topic, key, value, headers, partition)"
                                                        : "an encoded record is (kind, key, value, headers)");
        return -1;
    }
    PyObject *topic_name = PyTuple_GET_ITEM(m, 0), *key = PyTuple_GET_ITEM(m, 1);
    PyObject *value = PyTuple_GET_ITEM(m, 2), *headers = PyTuple_GET_ITEM(m, 3);
    long partition = -1;
    if (topics != NULL) {
        PyObject *kind = topic_name;
        topic_name = PyDict_GetItemWithError(topics, kind);
        if (topic_name == NULL) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_KeyError, "no topic for kind %R", kind);
            return -1;
        }
    }
    if (!PyUnicode_Check(topic_name)) {
        PyErr_SetString(PyExc_TypeError, "a message's topic is a str");
        return -1;
    }
    if (payload_of(key, &out->key, &out->key_size) < 0 || payload_of(value, &out->value, &out->value_size) < 0)
        return -1;
    if (topics == NULL) {
        partition = PyLong_AsLong(PyTuple_GET_ITEM(m, 4));
        if (partition == -1 && PyErr_Occurred()) return -1;
    }
    if (partition < INT32_MIN || partition > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "partition out of range");
        return -1;
    }
    out->topic = topic_of(p, topic_name);
    if (out->topic == NULL) return -1;
    out->headers = NULL;
    if (!PyList_Check(headers) || PyList_GET_SIZE(headers) > 0) {
        out->headers = headers_of(headers);
        if (out->headers == NULL) return -1;
    }
    out->partition = (int32_t)partition;
    return 0;
}

/* librdkafka's producev for each pending message; the count queued (stops at the first error: *err) */
static Py_ssize_t queue_all(Producer *p, Pending *pending, Py_ssize_t count, Counts *counts, rd_kafka_resp_err_t *err) {
    Py_ssize_t done = 0;
    *err = 0;
    for (; done < count; done++) {
        Pending *m = &pending[done];
        __atomic_add_fetch(&counts->refs, 1, __ATOMIC_ACQ_REL); /* the message's, released by its report */
        if (m->headers != NULL)
            *err = rk.producev(p->handle, VTYPE_RKT, m->topic, VTYPE_PARTITION, m->partition, VTYPE_MSGFLAGS,
                               (int)0, VTYPE_KEY, (void *)m->key, m->key_size, VTYPE_VALUE,
                               (void *)m->value, m->value_size, VTYPE_OPAQUE, (void *)counts, VTYPE_HEADERS,
                               m->headers, VTYPE_END);
        else
            *err = rk.producev(p->handle, VTYPE_RKT, m->topic, VTYPE_PARTITION, m->partition, VTYPE_MSGFLAGS,
                               (int)0, VTYPE_KEY, (void *)m->key, m->key_size, VTYPE_VALUE,
                               (void *)m->value, m->value_size, VTYPE_OPAQUE, (void *)counts, VTYPE_END);
        if (*err != 0) {
            counts_release(counts); /* no report will come: the message was not queued */
            break;
        }
    }
    for (Py_ssize_t i = done; i < count; i++) /* not queued: their headers are still ours */
        if (pending[i].headers != NULL) rk.headers_destroy(pending[i].headers);
    return done;
}

static PyObject *producer_produce(PyObject *self, PyObject *args) {
    Producer *p = (Producer *)self;
    PyObject *messages, *topics = Py_None;
    Py_ssize_t start;
    Tracker *tracker;
    if (!PyArg_ParseTuple(args, "O!nO!|O:produce", &PyList_Type, &messages, &start, &TrackerType, &tracker, &topics))
        return NULL;
    if (topics == Py_None) {
        topics = NULL;
    } else if (!PyDict_Check(topics)) {
        PyErr_SetString(PyExc_TypeError, "topics is a dict (kind -> topic) or None");
        return NULL;
    }
    if (!usable(p)) return NULL;
    sweep();
    Pending *pending = PyMem_Malloc(CHUNK * sizeof(Pending));
    if (pending == NULL) return PyErr_NoMemory();
    Py_INCREF(messages); /* its items stay alive while the GIL is released */
    Counts *counts = tracker->counts;
    Py_ssize_t at = start < 0 ? 0 : start;
    rd_kafka_resp_err_t err = 0;
    PyObject *result = NULL;
    while (at < PyList_GET_SIZE(messages)) {
        /* The chunk is sliced first and collected from the slice: collecting may call back into Python (a
         * kind's hash, a partition's __index__) that could change the list, and librdkafka points into
         * the keys and values until their reports (no copy): the slice, held by the tracker until then,
         * keeps the chunk's messages alive whatever happens to the list. */
        PyObject *held = PyList_GetSlice(messages, at, at + CHUNK);
        if (held == NULL) goto done;
        Py_ssize_t count = 0, end = PyList_GET_SIZE(held);
        for (; count < end; count++) {
            if (collect(p, PyList_GET_ITEM(held, count), topics, &pending[count]) < 0) break;
        }
        if (count < end || PyList_Append(tracker->held, held) < 0) {
            for (Py_ssize_t i = 0; i < count; i++)
                if (pending[i].headers != NULL) rk.headers_destroy(pending[i].headers);
            Py_DECREF(held);
            goto done;
        }
        Py_DECREF(held); /* the tracker's now */
        Py_ssize_t queued;
        p->busy++;
        Py_BEGIN_ALLOW_THREADS
        queued = queue_all(p, pending, count, counts, &err);
        Py_END_ALLOW_THREADS
        p->busy--;
        at += queued;
        if (err != 0) break;
    }
    if (err != 0 && err != ERR_QUEUE_FULL) {
        PyObject *error = Py_BuildValue("(is)", err, rk.err2str(err));
        if (error != NULL) {
            PyErr_SetObject(ProduceError, error);
            Py_DECREF(error);
        }
        goto done;
    }
    result = PyLong_FromSsize_t(at);
done:
    Py_DECREF(messages);
    PyMem_Free(pending);
    return result;
}

/* a timeout in seconds as librdkafka's milliseconds: 0 for NaN or negative (never -1, "forever"), at most
 * INT_MAX (a float cast to int out of its range is undefined) */
static int millis(double seconds) {
    if (!(seconds > 0)) return 0;
    if (seconds >= INT_MAX / 1000.0) return INT_MAX;
    return (int)(seconds * 1000);
}

/* poll(timeout seconds) -> events served; reports, errors and logs are served here */
static PyObject *producer_poll(PyObject *self, PyObject *arg) {
    Producer *p = (Producer *)self;
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    if (!usable(p)) return NULL;
    int served;
    p->busy++;
    Py_BEGIN_ALLOW_THREADS
    served = rk.poll(p->handle, millis(timeout));
    Py_END_ALLOW_THREADS
    p->busy--;
    sweep();
    return PyLong_FromLong(served);
}

/* flush(timeout seconds) -> messages still queued or in flight (0: every report was served) */
static PyObject *producer_flush(PyObject *self, PyObject *arg) {
    Producer *p = (Producer *)self;
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    if (!usable(p)) return NULL;
    int left;
    p->busy++;
    Py_BEGIN_ALLOW_THREADS
    rk.flush(p->handle, millis(timeout));
    left = rk.outq_len(p->handle);
    Py_END_ALLOW_THREADS
    p->busy--;
    sweep();
    return PyLong_FromLong(left);
}

static PyObject *producer_outq_len(PyObject *self, PyObject *unused) {
    Producer *p = (Producer *)self;
    if (!usable(p)) return NULL;
    return PyLong_FromLong(rk.outq_len(p->handle));
}

/* (code, text) of the producer's fatal error, or None */
static PyObject *producer_fatal_error(PyObject *self, PyObject *unused) {
    Producer *p = (Producer *)self;
    if (!usable(p)) return NULL;
    char errstr[512];
    rd_kafka_resp_err_t err = rk.fatal_error(p->handle, errstr, sizeof errstr);
    if (err == 0) Py_RETURN_NONE;
    PyObject *text = PyUnicode_DecodeUTF8(errstr, (Py_ssize_t)strnlen(errstr, sizeof errstr), "replace");
    if (text == NULL) return NULL;
    return Py_BuildValue("(iN)", err, text);
}

/* events() -> [(kind, code, text)]: kind "error" (code: the error code) or "log" (code: the syslog
 * level), oldest first; then ("dropped", count, "") when the queue overflowed */
static PyObject *producer_events(PyObject *self, PyObject *unused) {
    Producer *p = (Producer *)self;
    pthread_mutex_lock(&p->events.lock);
    Event *e = p->events.head;
    long dropped = p->events.dropped;
    p->events.head = p->events.tail = NULL;
    p->events.count = 0;
    p->events.dropped = 0;
    pthread_mutex_unlock(&p->events.lock);
    PyObject *out = PyList_New(0);
    while (e != NULL) {
        Event *next = e->next;
        if (out != NULL) {
            PyObject *item = Py_BuildValue("(siy)", e->kind == 0 ? "error" : "log", e->code, e->text);
            if (item == NULL || PyList_Append(out, item) < 0) Py_CLEAR(out);
            Py_XDECREF(item);
        }
        free(e);
        e = next;
    }
    if (out != NULL && dropped) {
        PyObject *item = Py_BuildValue("(sly)", "dropped", dropped, "");
        if (item == NULL || PyList_Append(out, item) < 0) Py_CLEAR(out);
        Py_XDECREF(item);
    }
    return out;
}

static void destroy(Producer *p) {
    rd_kafka_t *handle = p->handle;
    p->handle = NULL;
    PyObject *topics = p->topics;
    p->topics = NULL;
    if (topics != NULL) {
        PyObject *name, *pointer;
        Py_ssize_t at = 0;
        while (PyDict_Next(topics, &at, &name, &pointer)) rk.topic_destroy(PyLong_AsVoidPtr(pointer));
        Py_DECREF(topics);
    }
    if (handle == NULL) return;
    Py_BEGIN_ALLOW_THREADS
    /* what is left fails its reports (purged), so their counts are released */
    rk.purge(handle, PURGE_F_QUEUE | PURGE_F_INFLIGHT);
    for (int i = 0; i < 10 && rk.outq_len(handle) > 0; i++) rk.poll(handle, 100);
    rk.poll(handle, 0);
    rk.destroy(handle);
    Py_END_ALLOW_THREADS
    sweep(); /* the orphans whose last reports were served here (else kept until another producer's call) */
}

/* close(): purge what is still queued, destroy the handle (flush first to deliver it) */
static PyObject *producer_close(PyObject *self, PyObject *unused) {
    Producer *p = (Producer *)self;
    if (p->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the producer is in use by another thread");
        return NULL;
    }
    destroy(p);
    Py_RETURN_NONE;
}

static void producer_dealloc(PyObject *self) {
    Producer *p = (Producer *)self;
    destroy(p);
    Event *e = p->events.head;
    while (e != NULL) {
        Event *next = e->next;
        free(e);
        e = next;
    }
    pthread_mutex_destroy(&p->events.lock);
    Py_TYPE(self)->tp_free(self);
}

static PyMethodDef producer_methods[] = {
    {"produce", producer_produce, METH_VARARGS, "produce(messages, start, tracker, topics=None) -> next index"},
    {"poll", producer_poll, METH_O, "poll(timeout) -> events served"},
    {"flush", producer_flush, METH_O, "flush(timeout) -> messages left"},
    {"outq_len", producer_outq_len, METH_NOARGS, "messages queued or in flight"},
    {"fatal_error", producer_fatal_error, METH_NOARGS, "(code, text) or None"},
    {"events", producer_events, METH_NOARGS, "[(kind, code, text)] errors and logs since the last call"},
    {"close", producer_close, METH_NOARGS, "destroy the handle (what is queued is purged)"},
    {NULL},
};

static PyTypeObject ProducerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sinks._rdkafka.Producer",
    .tp_basicsize = sizeof(Producer),
    .tp_dealloc = producer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Producer(config: list of (name, value)): a librdkafka producer",
    .tp_methods = producer_methods,
    .tp_new = producer_new,
};

/* load(path) -> librdkafka's version: open the library and find the functions used here */
static PyObject *load(PyObject *module, PyObject *arg) {
    if (library != NULL) return PyUnicode_FromString(rk.version_str());
    PyObject *path;
    if (!PyUnicode_FSConverter(arg, &path)) return NULL;
    void *lib = dlopen(PyBytes_AS_STRING(path), RTLD_NOW | RTLD_LOCAL);
    Py_DECREF(path);
    if (lib == NULL) {
        PyErr_Format(PyExc_ImportError, "librdkafka: %s", dlerror());
        return NULL;
    }
#define FIND(field, name)                                                   \
    if ((*(void **)&rk.field = dlsym(lib, name)) == NULL) {               \
        PyErr_Format(PyExc_ImportError, "librdkafka has no %s", name);   \
        dlclose(lib);                                                       \
        return NULL;                                                        \
    }
    FIND(conf_new, "rd_kafka_conf_new")
    FIND(conf_set, "rd_kafka_conf_set")
    FIND(conf_set_dr_msg_cb, "rd_kafka_conf_set_dr_msg_cb")
    FIND(conf_set_error_cb, "rd_kafka_conf_set_error_cb")
    FIND(conf_set_log_cb, "rd_kafka_conf_set_log_cb")
    FIND(conf_set_opaque, "rd_kafka_conf_set_opaque")
    FIND(conf_destroy, "rd_kafka_conf_destroy")
    FIND(new_, "rd_kafka_new")
    FIND(destroy, "rd_kafka_destroy")
    FIND(opaque, "rd_kafka_opaque")
    FIND(poll, "rd_kafka_poll")
    FIND(flush, "rd_kafka_flush")
    FIND(outq_len, "rd_kafka_outq_len")
    FIND(purge, "rd_kafka_purge")
    FIND(fatal_error, "rd_kafka_fatal_error")
    FIND(err2str, "rd_kafka_err2str")
    FIND(topic_new, "rd_kafka_topic_new")
    FIND(topic_destroy, "rd_kafka_topic_destroy")
    FIND(headers_new, "rd_kafka_headers_new")
    FIND(header_add, "rd_kafka_header_add")
    FIND(headers_destroy, "rd_kafka_headers_destroy")
    FIND(producev, "rd_kafka_producev")
    FIND(queue_get_main, "rd_kafka_queue_get_main")
    FIND(set_log_queue, "rd_kafka_set_log_queue")
    FIND(queue_destroy, "rd_kafka_queue_destroy")
    FIND(version_str, "rd_kafka_version_str")
#undef FIND
    library = lib;
    return PyUnicode_FromString(rk.version_str());
}

static PyMethodDef module_methods[] = {
    {"load", load, METH_O, "load(path of librdkafka.so) -> its version"},
    {NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "sinks._rdkafka", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__rdkafka(void) {
    if (PyType_Ready(&TrackerType) < 0 || PyType_Ready(&ProducerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    ProduceError = PyErr_NewException("sinks._rdkafka.ProduceError", NULL, NULL);
    if (ProduceError == NULL || PyModule_AddObjectRef(m, "ProduceError", ProduceError) < 0 ||
        PyModule_AddObjectRef(m, "Tracker", (PyObject *)&TrackerType) < 0 ||
        PyModule_AddObjectRef(m, "Producer", (PyObject *)&ProducerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
