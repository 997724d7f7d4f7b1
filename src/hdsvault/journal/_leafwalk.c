/*
 * hdsvault.journal._leafwalk: the verifier's inner loop, compiled.
 *
 * Why: `journal verify` must rebuild every entry's leaf bytes from its stored columns (the
 * views read the columns, so a column edited without its leaf must be caught), hash them and
 * rebuild the Merkle tree. In Python that costs ~11 us per entry, against ~1 us for the bare
 * SHA-256 of the same bytes; most of it is the row fetch into Python objects. Here one call
 * reads a range of entries straight from the SQLite file (its own read-only connection,
 * without the GIL, so several ranges run on several cores), rebuilds each leaf exactly as
 * hdsvault.journal.store.leaf_bytes does (docs/journal.md, "Leaf bytes"), hashes it,
 * compares it with the stored leaf hash and folds the leaves into a compact range.
 *
 * It only ever *confirms*: any row it cannot reproduce byte for byte (a mismatch, a gap, a
 * column of an unexpected type, a time of another shape, a pruned entry without its hash)
 * makes the whole range "not clean", and Python's per-entry path walks that range again and
 * names the problem. A clean answer implies Python would have found the same bytes: the
 * escaping is orjson's (RFC 8259 minimal: quote, backslash and C0 controls, the five short
 * forms, \u00xx lowercase otherwise), every column's type is checked, and the raw-copied
 * `objects` JSON can only match where it is byte-identical to the canonical text.
 *
 * walk(path, log_id, start, end, sizes) -> (clean, rows, bytes_hashed, pruned_max,
 *                                           nodes, nodes_at)
 *   entries with start <= seq < end; `start` must be a multiple of a power of two >= end-start
 *   (an RFC 9162 subtree), so the local compact range is the global one's continuation.
 *   nodes: compact range of [start, end) (32 bytes per set bit of end-start, largest first);
 *   nodes_at: for each size s in `sizes` with start < s <= end, the compact range of [start, s).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/sha.h>
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>

/* Columns selected, in the leaf's sorted key order; seq (14) comes from the seq column. */
static const char *const KEYS[] = {
    "action", "actor", "actor_role", "category", "detail_sealed", "event_type", "log_id",
    "objects", "on_behalf_of", "outcome", "patient", "professional_id", "purpose_of_use",
    "request_id", "seq", "severity", "source_address", "time", "zone",
};
#define NKEYS 19
#define K_SEALED 4
#define K_OBJECTS 7
#define K_SEQ 14
#define K_TIME 17
#define C_HASH 19
#define C_PRUNED 20
#define STORED_TIME_LEN 26 /* "2026-11-29 07:31:15.123456", as _sqlite_time stores it */
#define MAX_LEVELS 64

static const char SELECT_SQL[] =
    "SELECT action, actor, actor_role, category, detail_sealed, event_type, log_id, objects,"
    " on_behalf_of, outcome, patient, professional_id, purpose_of_use, request_id, seq,"
    " severity, source_address, time, zone, leaf_hash, pruned FROM journal_entries"
    " WHERE log_id = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq";

static char prefix[NKEYS][32]; /* `{"action":`, `,"actor":`, ... */
static size_t prefix_len[NKEYS];
static unsigned char needs_escape[256];

typedef struct {
    unsigned char *p;
    size_t n, cap;
} Buf;

static int reserve(Buf *b, size_t more) {
    if (b->n + more <= b->cap) return 1;
    size_t cap = (b->n + more) * 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p) return 0;
    b->p = p;
    b->cap = cap;
    return 1;
}

static void put(Buf *b, const void *s, size_t n) { memcpy(b->p + b->n, s, n); b->n += n; }

static const char HEX[] = "0123456789abcdef";

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether any of 8 bytes is below 0x20, a quote or a backslash (may not say which). */
static inline int any_special(uint64_t v) {
    uint64_t quote = v ^ (ONES * '"'), backslash = v ^ (ONES * '\\');
    return (((v - ONES * 0x20) & ~v) | ((quote - ONES) & ~quote)
            | ((backslash - ONES) & ~backslash)) & HIGHS ? 1 : 0;
}

/* A JSON string as orjson writes it; the caller reserved 6 * n + 2 bytes. Runs of 8 bytes
 * with nothing to escape (nearly all of a journal entry) are skipped a word at a time. */
static void put_string(Buf *b, const unsigned char *s, size_t n) {
    b->p[b->n++] = '"';
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (!any_special(v)) {
                i += 7;
                continue;
            }
        }
        unsigned char c = s[i];
        if (!needs_escape[c]) continue;
        put(b, s + from, i - from);
        from = i + 1;
        switch (c) {
        case '"': put(b, "\\\"", 2); break;
        case '\\': put(b, "\\\\", 2); break;
        case '\n': put(b, "\\n", 2); break;
        case '\r': put(b, "\\r", 2); break;
        case '\t': put(b, "\\t", 2); break;
        case '\b': put(b, "\\b", 2); break;
        case '\f': put(b, "\\f", 2); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', HEX[c >> 4], HEX[c & 15]};
            put(b, u, 6);
        }
        }
    }
    put(b, s + from, n - from);
    b->p[b->n++] = '"';
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding, quoted; the caller reserved 4 * (n / 3 + 1) + 2 bytes. */
static void put_base64(Buf *b, const unsigned char *s, size_t n) {
    unsigned char *o = b->p + b->n;
    *o++ = '"';
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8) | s[i + 2];
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63]; *o++ = B64[(v >> 6) & 63]; *o++ = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63]; *o++ = '='; *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8);
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63]; *o++ = B64[(v >> 6) & 63]; *o++ = '=';
    }
    *o++ = '"';
    b->n = (size_t)(o - b->p);
}

static void sha256_two(const unsigned char *a, size_t an, const unsigned char *c, size_t cn,
                       unsigned char out[32]) {
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, a, an);
    SHA256_Update(&ctx, c, cn);
    SHA256_Final(out, &ctx);
}

/* Leaf bytes of the current row into b (after the 0x00 leaf prefix); 0 if the row has a
 * column no recorded entry can hold (then Python decides). */
static int build_leaf(sqlite3_stmt *st, Buf *b) {
    b->n = 0;
    for (int k = 0; k < NKEYS; k++) {
        int type = sqlite3_column_type(st, k);
        const unsigned char *v = NULL;
        size_t n = 0;
        if (type == SQLITE_TEXT || type == SQLITE_BLOB) {
            v = type == SQLITE_TEXT ? sqlite3_column_text(st, k) : sqlite3_column_blob(st, k);
            n = (size_t)sqlite3_column_bytes(st, k);
        }
        if (!reserve(b, prefix_len[k] + 6 * n + 64)) return -1;
        put(b, prefix[k], prefix_len[k]);
        if (k == K_SEQ) {
            if (type != SQLITE_INTEGER) return 0;
            long long v = sqlite3_column_int64(st, k);
            if (v < 0) return 0; /* no leaf has one; Python decides */
            char digits[24];
            int d = 0;
            do digits[d++] = (char)('0' + v % 10); while ((v /= 10) > 0);
            while (d) b->p[b->n++] = (unsigned char)digits[--d];
        } else if (k == K_SEALED) {
            if (type == SQLITE_NULL || (type == SQLITE_BLOB && n == 0)) put(b, "null", 4);
            else if (type == SQLITE_BLOB) put_base64(b, v, n);
            else return 0;
        } else if (type == SQLITE_NULL) {
            put(b, "null", 4);
        } else if (type != SQLITE_TEXT) {
            return 0;
        } else if (k == K_OBJECTS) {
            put(b, v, n); /* canonical JSON text; only a byte-identical one can match */
        } else if (k == K_TIME) {
            if (n != STORED_TIME_LEN || v[10] != ' ') return 0;
            unsigned char t[STORED_TIME_LEN + 1];
            memcpy(t, v, 10);
            t[10] = 'T';
            memcpy(t + 11, v + 11, STORED_TIME_LEN - 11);
            t[STORED_TIME_LEN] = 'Z';
            put_string(b, t, sizeof t);
        } else {
            put_string(b, v, n);
        }
    }
    b->p[b->n++] = '}';
    return 1;
}

typedef struct {
    int clean;
    int error; /* SQLite error code, or -1 for memory */
    char message[256];
    long long rows, bytes, pruned_max;
    unsigned char stack[MAX_LEVELS][32];
    int sp;
    unsigned char *at;  /* nodes at the requested sizes, concatenated */
    size_t at_len;
} Walk;

static void push_leaf(Walk *w, const unsigned char leaf[32], long long local) {
    static const unsigned char NODE_PREFIX = 0x01;
    unsigned char h[32], pair[64];
    memcpy(h, leaf, 32);
    for (long long carry = local; carry & 1; carry >>= 1) {
        memcpy(pair, w->stack[--w->sp], 32);
        memcpy(pair + 32, h, 32);
        sha256_two(&NODE_PREFIX, 1, pair, 64, h);
    }
    memcpy(w->stack[w->sp++], h, 32);
}

static void run(const char *path, const char *log_id, long long start, long long end,
                const long long *sizes, Py_ssize_t nsizes, Walk *w) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    Buf b = {0};
    w->clean = 1;
    w->pruned_max = -1;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "PRAGMA mmap_size = 1073741824", NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db, SELECT_SQL, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 1, log_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 2, start);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 3, end);
    static const unsigned char LEAF_PREFIX = 0x00;
    Py_ssize_t next_size = 0;
    while (next_size < nsizes && sizes[next_size] <= start) next_size++;
    long long expected = start;
    while (rc == SQLITE_OK && w->clean) {
        int step = sqlite3_step(st);
        if (step == SQLITE_DONE) break;
        if (step != SQLITE_ROW) { rc = step; break; }
        unsigned char leaf[32];
        const void *stored = sqlite3_column_blob(st, C_HASH);
        int stored_ok = sqlite3_column_type(st, C_HASH) == SQLITE_BLOB
                        && sqlite3_column_bytes(st, C_HASH) == 32;
        if (sqlite3_column_int64(st, K_SEQ) != expected || !stored_ok) { w->clean = 0; break; }
        if (sqlite3_column_int64(st, C_PRUNED)) {
            memcpy(leaf, stored, 32); /* emptied by retention: the stored hash stands in */
            w->pruned_max = expected;
        } else {
            int built = build_leaf(st, &b);
            if (built < 0) { w->error = -1; break; }
            if (!built) { w->clean = 0; break; }
            sha256_two(&LEAF_PREFIX, 1, b.p, b.n, leaf);
            if (memcmp(leaf, stored, 32) != 0) { w->clean = 0; break; }
            w->bytes += (long long)b.n;
        }
        push_leaf(w, leaf, expected - start);
        expected++;
        w->rows++;
        while (next_size < nsizes && sizes[next_size] == expected) {
            unsigned char *at = realloc(w->at, w->at_len + 32 * (size_t)w->sp);
            if (!at) { w->error = -1; break; }
            w->at = at;
            for (int i = 0; i < w->sp; i++) memcpy(w->at + w->at_len + 32 * (size_t)i, w->stack[i], 32);
            w->at_len += 32 * (size_t)w->sp;
            next_size++;
        }
        if (w->error) break;
    }
    if (w->clean && !w->error && rc == SQLITE_OK && expected != end) w->clean = 0;
    if (rc != SQLITE_OK && !w->error) {
        w->error = rc;
        snprintf(w->message, sizeof w->message, "%s", db ? sqlite3_errmsg(db) : "cannot open");
    }
    free(b.p);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static PyObject *walk(PyObject *self, PyObject *args) {
    (void)self;
    const char *path, *log_id;
    long long start, end;
    PyObject *sizes_obj;
    if (!PyArg_ParseTuple(args, "ssLLO", &path, &log_id, &start, &end, &sizes_obj)) return NULL;
    if (start < 0 || end < start) {
        PyErr_SetString(PyExc_ValueError, "need 0 <= start <= end");
        return NULL;
    }
    long long width = end - start, pow2 = 1;
    while (pow2 < width) pow2 <<= 1;
    if (start % pow2) {
        PyErr_SetString(PyExc_ValueError, "start must be a multiple of a power of two >= end - start");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(sizes_obj, "sizes must be a sequence of ints");
    if (!seq) return NULL;
    Py_ssize_t nsizes = PySequence_Fast_GET_SIZE(seq);
    long long *sizes = PyMem_Malloc(sizeof(long long) * (size_t)(nsizes ? nsizes : 1));
    if (!sizes) { Py_DECREF(seq); return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < nsizes; i++) {
        sizes[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (sizes[i] == -1 && PyErr_Occurred()) { PyMem_Free(sizes); Py_DECREF(seq); return NULL; }
        if (i && sizes[i] <= sizes[i - 1]) {
            PyMem_Free(sizes);
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "sizes must be strictly increasing");
            return NULL;
        }
    }
    Py_DECREF(seq);
    /* path and log_id stay alive: args holds them for the whole call. */
    Walk *w = PyMem_RawCalloc(1, sizeof(Walk));
    if (!w) { PyMem_Free(sizes); return PyErr_NoMemory(); }
    Py_BEGIN_ALLOW_THREADS
    run(path, log_id, start, end, sizes, nsizes, w);
    Py_END_ALLOW_THREADS
    PyMem_Free(sizes);
    PyObject *result = NULL;
    if (w->error == -1) {
        PyErr_NoMemory();
    } else if (w->error) {
        PyErr_Format(PyExc_OSError, "journal walk: SQLite error %d: %s", w->error, w->message);
    } else {
        PyObject *nodes = PyBytes_FromStringAndSize(NULL, 32 * (Py_ssize_t)w->sp);
        PyObject *at = PyBytes_FromStringAndSize((const char *)w->at, (Py_ssize_t)w->at_len);
        if (nodes && at) {
            for (int i = 0; i < w->sp; i++) memcpy(PyBytes_AS_STRING(nodes) + 32 * i, w->stack[i], 32);
            result = Py_BuildValue("(OLLLOO)", w->clean ? Py_True : Py_False, w->rows, w->bytes,
                                   w->pruned_max, nodes, at);
        }
        Py_XDECREF(nodes);
        Py_XDECREF(at);
    }
    free(w->at);
    PyMem_RawFree(w);
    return result;
}

static PyMethodDef METHODS[] = {
    {"walk", walk, METH_VARARGS, "Rebuild, hash and fold a range of journal entries."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_leafwalk", "The journal verifier's compiled inner loop.", -1, METHODS,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__leafwalk(void) {
    for (int c = 0; c < 256; c++) needs_escape[c] = c < 0x20 || c == '"' || c == '\\';
    for (int k = 0; k < NKEYS; k++)
        prefix_len[k] = (size_t)snprintf(prefix[k], sizeof prefix[k], "%s\"%s\":", k ? "," : "{", KEYS[k]);
    return PyModule_Create(&MODULE);
}
