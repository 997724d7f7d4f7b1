/*
 * hdsvault.journal._leafwalk: the verifier's inner loop, compiled.
 *
 * Why: `journal verify` must rebuild every entry's leaf bytes from its stored columns (the
 * views read the columns, so a column edited without its leaf must be caught), hash them and
 * rebuild the Merkle tree. In Python that costs ~11 us per entry, against ~1 us for the bare
 * SHA-256 of the same bytes; most of it is the row fetch into Python objects. Here one call
 * reads a range of entries straight from the SQLite file (its own read-only connection), or
 * parses PostgreSQL's binary COPY of them, without the GIL, so several ranges run on several
 * cores; it rebuilds each leaf exactly as
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
 *   entries with start <= seq < end, read from the SQLite file at path;
 * walk_copy(data, start, end, sizes) -> the same, from PostgreSQL's binary COPY of the same
 *   select list (seq int4 or int8, time timestamptz, pruned bool); `start` must be a multiple of a power of two >= end-start
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
#define STORED_TIME_LEN 26 /* "2026-11-29 07:31:15.123456", as _sqlite_time stores it */
#define MAX_LEVELS 64

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

static void sha256(const unsigned char *p, size_t n, unsigned char out[32]) {
    SHA256_CTX ctx; /* the low-level calls: SHA256() goes through EVP, ~3x slower on 65 bytes */
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, p, n);
    SHA256_Final(out, &ctx);
}

/* One column of a row, whatever the database it came from. */
enum { V_NULL, V_TEXT, V_BLOB, V_INT, V_MICROS, V_OTHER };
typedef struct {
    int type;
    const unsigned char *p;
    size_t n;
    long long i; /* V_INT: the integer; V_MICROS: microseconds since 2000-01-01T00:00:00Z */
} Value;
#define NCOLS 21 /* the 19 leaf keys in order (seq among them), leaf_hash, pruned */

/* "YYYY-MM-DDTHH:MM:SS.ffffffZ" of a PostgreSQL timestamp, as format_time spells it; 0 if
 * Python's datetime cannot hold it (years 1-9999). Days to civil date: H. Hinnant's
 * algorithm (public domain). */
static int format_micros(long long micros, unsigned char out[27]) { /* not 0-terminated */
    long long secs = micros / 1000000, us = micros % 1000000;
    if (us < 0) { us += 1000000; secs -= 1; }
    long long days = secs / 86400, sod = secs % 86400;
    if (sod < 0) { sod += 86400; days -= 1; }
    long long z = days + 10957 + 719468; /* 2000-01-01 is day 10957 of the Unix epoch */
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1;
    long long m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) y += 1;
    if (y < 1 || y > 9999) return 0;
    const long long parts[7] = {y, m, d, sod / 3600, sod / 60 % 60, sod % 60, us};
    static const int width[7] = {4, 2, 2, 2, 2, 2, 6};
    static const char after[7] = {'-', '-', 'T', ':', ':', '.', 'Z'};
    unsigned char *o = out;
    for (int i = 0; i < 7; i++) {
        long long x = parts[i];
        for (int j = width[i] - 1; j >= 0; j--, x /= 10) o[j] = (unsigned char)('0' + x % 10);
        o += width[i];
        *o++ = (unsigned char)after[i];
    }
    return 1;
}

/* Leaf bytes of a row into b; 0 if a column holds what no recorded entry can (Python
 * decides), -1 if out of memory. */
static int build_leaf(const Value *v, Buf *b) {
    b->n = 0;
    if (!reserve(b, 1)) return -1;
    b->p[b->n++] = 0x00; /* the RFC 9162 leaf prefix, hashed with the bytes */
    for (int k = 0; k < NKEYS; k++) {
        const Value *c = &v[k];
        if (!reserve(b, prefix_len[k] + 6 * c->n + 192)) return -1;
        put(b, prefix[k], prefix_len[k]);
        if (k == K_SEQ) {
            if (c->type != V_INT || c->i < 0) return 0;
            long long n = c->i;
            char digits[24];
            int d = 0;
            do digits[d++] = (char)('0' + n % 10); while ((n /= 10) > 0);
            while (d) b->p[b->n++] = (unsigned char)digits[--d];
        } else if (k == K_SEALED) {
            if (c->type == V_NULL || (c->type == V_BLOB && c->n == 0)) put(b, "null", 4);
            else if (c->type == V_BLOB) put_base64(b, c->p, c->n);
            else return 0;
        } else if (c->type == V_NULL) {
            put(b, "null", 4);
        } else if (k == K_TIME) {
            unsigned char t[28];
            if (c->type == V_MICROS) {
                if (!format_micros(c->i, t)) return 0;
            } else if (c->type == V_TEXT && c->n == STORED_TIME_LEN && c->p[10] == ' ') {
                memcpy(t, c->p, 10); /* SQLite's naive UTC text, as _sqlite_time stores it */
                t[10] = 'T';
                memcpy(t + 11, c->p + 11, STORED_TIME_LEN - 11);
                t[STORED_TIME_LEN] = 'Z';
            } else {
                return 0;
            }
            put_string(b, t, 27);
        } else if (c->type != V_TEXT) {
            return 0;
        } else if (k == K_OBJECTS) {
            put(b, c->p, c->n); /* canonical JSON text; only a byte-identical one can match */
        } else {
            put_string(b, c->p, c->n);
        }
    }
    b->p[b->n++] = '}';
    return 1;
}

typedef struct {
    int clean;
    int error; /* -1: out of memory; else a source error, described in message */
    char message[256];
    long long start, end, expected;
    long long rows, bytes, pruned_max;
    const long long *sizes;
    Py_ssize_t nsizes, next_size;
    unsigned char stack[MAX_LEVELS][32];
    int sp;
    unsigned char *at; /* nodes at the requested sizes, concatenated */
    size_t at_len;
    Buf leaf;
} Walk;

static void push_leaf(Walk *w, const unsigned char leaf[32], long long local) {
    unsigned char h[32], node[65] = {0x01}; /* RFC 9162 node: 0x01 || left || right */
    memcpy(h, leaf, 32);
    for (long long carry = local; carry & 1; carry >>= 1) {
        memcpy(node + 1, w->stack[--w->sp], 32);
        memcpy(node + 33, h, 32);
        sha256(node, 65, h);
    }
    memcpy(w->stack[w->sp++], h, 32);
}

static void walk_begin(Walk *w, long long start, long long end, const long long *sizes,
                       Py_ssize_t nsizes) {
    w->clean = 1;
    w->pruned_max = -1;
    w->start = w->expected = start;
    w->end = end;
    w->sizes = sizes;
    w->nsizes = nsizes;
    while (w->next_size < nsizes && sizes[w->next_size] <= start) w->next_size++;
}

/* Fold one row in; 0 when the walk must stop (not clean, or an error). */
static int walk_row(Walk *w, const Value *v) {
    const Value *stored = &v[NKEYS], *pruned = &v[NKEYS + 1];
    if (v[K_SEQ].type != V_INT || v[K_SEQ].i != w->expected || stored->type != V_BLOB
        || stored->n != 32 || pruned->type != V_INT) {
        w->clean = 0;
        return 0;
    }
    unsigned char leaf[32];
    if (pruned->i) {
        memcpy(leaf, stored->p, 32); /* emptied by retention: the stored hash stands in */
        w->pruned_max = w->expected;
    } else {
        int built = build_leaf(v, &w->leaf);
        if (built <= 0) {
            if (built < 0) w->error = -1;
            else w->clean = 0;
            return 0;
        }
        sha256(w->leaf.p, w->leaf.n, leaf);
        if (memcmp(leaf, stored->p, 32) != 0) {
            w->clean = 0;
            return 0;
        }
        w->bytes += (long long)w->leaf.n - 1;
    }
    push_leaf(w, leaf, w->expected - w->start);
    w->expected++;
    w->rows++;
    while (w->next_size < w->nsizes && w->sizes[w->next_size] == w->expected) {
        unsigned char *at = realloc(w->at, w->at_len + 32 * (size_t)w->sp);
        if (!at) {
            w->error = -1;
            return 0;
        }
        w->at = at;
        for (int i = 0; i < w->sp; i++) memcpy(w->at + w->at_len + 32 * (size_t)i, w->stack[i], 32);
        w->at_len += 32 * (size_t)w->sp;
        w->next_size++;
    }
    return 1;
}

static void walk_end(Walk *w) {
    if (w->clean && !w->error && w->expected != w->end) w->clean = 0;
}

/* ------------------------------------------------------------------ SQLite source */

static const char SELECT_SQL[] =
    "SELECT action, actor, actor_role, category, detail_sealed, event_type, log_id, objects,"
    " on_behalf_of, outcome, patient, professional_id, purpose_of_use, request_id, seq,"
    " severity, source_address, time, zone, leaf_hash, pruned FROM journal_entries"
    " WHERE log_id = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq";

static void run_sqlite(const char *path, const char *log_id, Walk *w) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db, SELECT_SQL, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 1, log_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 2, w->start);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 3, w->end);
    Value v[NCOLS];
    while (rc == SQLITE_OK) {
        int step = sqlite3_step(st);
        if (step == SQLITE_DONE) break;
        if (step != SQLITE_ROW) { rc = step; break; }
        for (int k = 0; k < NCOLS; k++) {
            Value *c = &v[k];
            c->n = 0;
            switch (sqlite3_column_type(st, k)) {
            case SQLITE_NULL: c->type = V_NULL; break;
            case SQLITE_INTEGER: c->type = V_INT; c->i = sqlite3_column_int64(st, k); break;
            case SQLITE_TEXT:
                c->type = V_TEXT;
                c->p = sqlite3_column_text(st, k);
                c->n = (size_t)sqlite3_column_bytes(st, k);
                break;
            case SQLITE_BLOB:
                c->type = V_BLOB;
                c->p = sqlite3_column_blob(st, k);
                c->n = (size_t)sqlite3_column_bytes(st, k);
                break;
            default: c->type = V_OTHER;
            }
        }
        if (!walk_row(w, v)) break;
    }
    if (rc != SQLITE_OK && !w->error) {
        w->error = rc;
        snprintf(w->message, sizeof w->message, "SQLite error %d: %s", rc,
                 db ? sqlite3_errmsg(db) : "cannot open");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* --------------------------------------------- PostgreSQL source (COPY ... FORMAT binary) */

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static long long be64(const unsigned char *p) {
    return (long long)(((uint64_t)be32(p) << 32) | be32(p + 4));
}

static const unsigned char COPY_SIGNATURE[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0};

/* The binary COPY of the same select list (seq int4/int8, time timestamptz, pruned bool). */
static void run_copy(const unsigned char *p, size_t n, Walk *w) {
    const unsigned char *end = p + n;
    const char *bad = NULL;
    if (n < 19 || memcmp(p, COPY_SIGNATURE, 11) != 0) bad = "not a binary COPY";
    else if (be32(p + 15) > n - 19) bad = "truncated";
    else p += 19 + be32(p + 15);
    Value v[NCOLS];
    while (!bad && w->clean) {
        if (end - p < 2) { bad = "truncated"; break; }
        int fields = (int16_t)((p[0] << 8) | p[1]);
        p += 2;
        if (fields == -1) break; /* trailer */
        if (fields != NCOLS) { bad = "unexpected column count"; break; }
        for (int k = 0; k < NCOLS && !bad; k++) {
            if (end - p < 4) { bad = "truncated"; break; }
            int32_t len = (int32_t)be32(p);
            p += 4;
            Value *c = &v[k];
            c->n = 0;
            if (len == -1) { c->type = V_NULL; continue; }
            if (len < 0 || end - p < len) { bad = "truncated"; break; }
            c->p = p;
            c->n = (size_t)len;
            p += len;
            if (k == K_SEQ) {
                c->type = V_INT;
                if (len == 4) c->i = (int32_t)be32(c->p);
                else if (len == 8) c->i = be64(c->p);
                else c->type = V_OTHER;
            } else if (k == K_TIME) {
                c->type = len == 8 ? V_MICROS : V_OTHER;
                if (len == 8) c->i = be64(c->p);
            } else if (k == NKEYS + 1) { /* pruned */
                c->type = len == 1 ? V_INT : V_OTHER;
                c->i = len == 1 ? c->p[0] : 0;
            } else {
                c->type = (k == K_SEALED || k == NKEYS) ? V_BLOB : V_TEXT;
            }
        }
        if (bad || !walk_row(w, v)) break;
    }
    if (bad) {
        w->error = 1;
        snprintf(w->message, sizeof w->message, "COPY data: %s", bad);
    }
}

/* ---------------------------------------------------------------------- Python glue */

/* Parse (start, end, sizes) and check them; returns the sizes array (PyMem) or NULL. */
static long long *parse_range(long long start, long long end, PyObject *sizes_obj,
                              Py_ssize_t *nsizes) {
    if (start < 0 || end < start) {
        PyErr_SetString(PyExc_ValueError, "need 0 <= start <= end");
        return NULL;
    }
    long long pow2 = 1;
    while (pow2 < end - start) pow2 <<= 1;
    if (start % pow2) {
        PyErr_SetString(PyExc_ValueError, "start must be a multiple of a power of two >= end - start");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(sizes_obj, "sizes must be a sequence of ints");
    if (!seq) return NULL;
    *nsizes = PySequence_Fast_GET_SIZE(seq);
    long long *sizes = PyMem_Malloc(sizeof(long long) * (size_t)(*nsizes ? *nsizes : 1));
    if (!sizes) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *nsizes; i++) {
        sizes[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        const char *problem = NULL;
        if (sizes[i] == -1 && PyErr_Occurred()) problem = "";
        else if (i && sizes[i] <= sizes[i - 1]) problem = "sizes must be strictly increasing";
        if (problem) {
            if (*problem) PyErr_SetString(PyExc_ValueError, problem);
            PyMem_Free(sizes);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    return sizes;
}

static PyObject *result(Walk *w) {
    PyObject *out = NULL;
    if (w->error == -1) {
        PyErr_NoMemory();
    } else if (w->error) {
        PyErr_Format(PyExc_OSError, "journal walk: %s", w->message);
    } else {
        PyObject *nodes = PyBytes_FromStringAndSize(NULL, 32 * (Py_ssize_t)w->sp);
        PyObject *at = PyBytes_FromStringAndSize((const char *)w->at, (Py_ssize_t)w->at_len);
        if (nodes && at) {
            for (int i = 0; i < w->sp; i++) memcpy(PyBytes_AS_STRING(nodes) + 32 * i, w->stack[i], 32);
            out = Py_BuildValue("(OLLLOO)", w->clean ? Py_True : Py_False, w->rows, w->bytes,
                                w->pruned_max, nodes, at);
        }
        Py_XDECREF(nodes);
        Py_XDECREF(at);
    }
    free(w->at);
    free(w->leaf.p);
    PyMem_RawFree(w);
    return out;
}

static PyObject *walk(PyObject *self, PyObject *args) {
    (void)self;
    const char *path, *log_id;
    long long start, end;
    PyObject *sizes_obj;
    Py_ssize_t nsizes = 0;
    if (!PyArg_ParseTuple(args, "ssLLO", &path, &log_id, &start, &end, &sizes_obj)) return NULL;
    long long *sizes = parse_range(start, end, sizes_obj, &nsizes);
    if (!sizes) return NULL;
    Walk *w = PyMem_RawCalloc(1, sizeof(Walk));
    if (!w) { PyMem_Free(sizes); return PyErr_NoMemory(); }
    walk_begin(w, start, end, sizes, nsizes);
    /* path and log_id stay alive: args holds them for the whole call. */
    Py_BEGIN_ALLOW_THREADS
    run_sqlite(path, log_id, w);
    walk_end(w);
    Py_END_ALLOW_THREADS
    PyMem_Free(sizes);
    return result(w);
}

static PyObject *walk_copy(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    long long start, end;
    PyObject *sizes_obj;
    Py_ssize_t nsizes = 0;
    if (!PyArg_ParseTuple(args, "y*LLO", &data, &start, &end, &sizes_obj)) return NULL;
    long long *sizes = parse_range(start, end, sizes_obj, &nsizes);
    Walk *w = sizes ? PyMem_RawCalloc(1, sizeof(Walk)) : NULL;
    if (!w) {
        PyMem_Free(sizes);
        PyBuffer_Release(&data);
        return sizes ? PyErr_NoMemory() : NULL;
    }
    walk_begin(w, start, end, sizes, nsizes);
    Py_BEGIN_ALLOW_THREADS
    run_copy(data.buf, (size_t)data.len, w);
    walk_end(w);
    Py_END_ALLOW_THREADS
    PyMem_Free(sizes);
    PyBuffer_Release(&data);
    return result(w);
}

static PyMethodDef METHODS[] = {
    {"walk", walk, METH_VARARGS, "Rebuild, hash and fold a range of entries of a SQLite file."},
    {"walk_copy", walk_copy, METH_VARARGS,
     "The same over PostgreSQL's binary COPY of the same select list."},
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
