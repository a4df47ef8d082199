/* Optional C speedup for the sync worker: a whole simple request in one buffer -> environ,
 * and start_response's header block.
 *
 * Why C here: with nginx's default (no fastcgi_keep_conn) every request is a new
 * connection whose first read holds BEGIN_REQUEST, the PARAMS stream and the whole STDIN
 * stream. Taking that apart with the codec's events and building the environ in Python
 * cost ~7 us of the ~21 us of Python a hello-world request spent in the worker (measured,
 * CPython 3.11); uWSGI does this in C. Both functions here answer None for anything out of
 * the ordinary, and the caller then takes the ordinary path: the codec
 * (gateway/protocol/connection.py) and gateway/wsgi/environ.build_environ for a request,
 * gateway/response.wsgi_header_block for headers. Those stay the reference
 * implementations, raise every error, and tests/wsgi/test_fastpath.py checks that this
 * module gives exactly what they give wherever it answers.
 *
 * request(data, base, root_path, max_params_bytes, max_params_count)
 *     -> (request_id, keep_conn, environ, body) | None
 *   ``data`` must be exactly one RESPONDER request: BEGIN_REQUEST, PARAMS records, the
 *   empty PARAMS, STDIN records and the empty STDIN, all for one request id, nothing else.
 *   The environ is ``base`` (copied) plus the params as latin-1 str, with build_environ's
 *   fix-ups; None when it would need the rare ones (a percent-encoded path, a repeated
 *   header).
 * header_block(status, headers) -> (block: bytes, content_length: int | None, code: int) | None
 *
 * The environ fix-ups are in _environ_fixups.h. No I/O; the item cache (_pairs_items.h)
 * is its only state, and the GIL guards it.
 */
#include "../protocol/_pairs_items.h"
#include "_environ_fixups.h"

#define MAX_SEGMENTS 16

typedef struct {
    const unsigned char *ptr;
    Py_ssize_t len;
} segment;

/* The record at *pos, if it is complete and of ``type`` for ``rid``: its content. */
static int
next_record(const unsigned char *p, Py_ssize_t end, Py_ssize_t *pos, int type, int rid,
            segment *out)
{
    Py_ssize_t i = *pos;
    if (end - i < 8 || p[i] != 1 || p[i + 1] != type || ((p[i + 2] << 8) | p[i + 3]) != rid) {
        return 0;
    }
    Py_ssize_t clen = (p[i + 4] << 8) | p[i + 5];
    Py_ssize_t plen = p[i + 6];
    if (end - i - 8 < clen + plen) {
        return 0;
    }
    out->ptr = p + i + 8;
    out->len = clen;
    *pos = i + 8 + clen + plen;
    return 1;
}

/* The non-empty records of one stream, up to and including its empty end record. */
static int
read_stream(const unsigned char *p, Py_ssize_t end, Py_ssize_t *pos, int type, int rid,
            segment *segs, int *nsegs, Py_ssize_t *total)
{
    segment s;
    *nsegs = 0;
    *total = 0;
    while (next_record(p, end, pos, type, rid, &s)) {
        if (s.len == 0) {
            return 1;
        }
        if (*nsegs == MAX_SEGMENTS) {
            return 0;
        }
        segs[(*nsegs)++] = s;
        *total += s.len;
    }
    return 0;
}

/* The stream's content as one buffer: the record itself when there is one, else a copy
 * the caller frees (*owned). */
static const unsigned char *
join_segments(segment *segs, int nsegs, Py_ssize_t total, unsigned char **owned)
{
    *owned = NULL;
    if (nsegs == 1) {
        return segs[0].ptr;
    }
    if (nsegs == 0) {
        return (const unsigned char *)"";
    }
    unsigned char *buf = PyMem_Malloc((size_t)total);
    if (buf == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t off = 0;
    for (int i = 0; i < nsegs; i++) {
        memcpy(buf + off, segs[i].ptr, (size_t)segs[i].len);
        off += segs[i].len;
    }
    *owned = buf;
    return buf;
}

/* The params into ``env``: 1 done, 0 not simple (malformed, too many, a repeated name or
 * one the base already has), -1 error. */
static int
fill_params(PyObject *env, const unsigned char *p, Py_ssize_t end, Py_ssize_t max_count)
{
    Py_ssize_t pos = 0, count = 0;
    while (pos < end) {
        Py_ssize_t n = read_length(p, end, &pos);
        if (n < 0) {
            return 0;
        }
        Py_ssize_t v = read_length(p, end, &pos);
        if (v < 0 || n > end - pos || v > end - pos - n || ++count > max_count) {
            return 0;
        }
        PyObject *name = make_item(p + pos, n, 1, 2 * (count - 1));
        if (name == NULL) {
            return -1;
        }
        int seen = PyDict_Contains(env, name);
        if (seen != 0) {
            Py_DECREF(name);
            return seen < 0 ? -1 : 0;
        }
        PyObject *value = make_item(p + pos + n, v, 1, 2 * (count - 1) + 1);
        if (value == NULL) {
            Py_DECREF(name);
            return -1;
        }
        int failed = PyDict_SetItem(env, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (failed) {
            return -1;
        }
        pos += n + v;
    }
    return 1;
}


static PyObject *
request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyBytes_CheckExact(args[0]) || !PyDict_CheckExact(args[1]) ||
        !PyUnicode_Check(args[2]) || !PyLong_Check(args[3]) || !PyLong_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "request(data: bytes, base: dict, root_path: str, max_params_bytes: int, "
                        "max_params_count: int)");
        return NULL;
    }
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[3]);
    Py_ssize_t max_count = PyLong_AsSsize_t(args[4]);
    if ((max_bytes == -1 || max_count == -1) && PyErr_Occurred()) {
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t end = PyBytes_GET_SIZE(args[0]);
    /* BEGIN_REQUEST: role RESPONDER, a non-zero id, an 8-byte body */
    if (end < 16 || p[0] != 1 || p[1] != 1 || p[4] != 0 || p[5] != 8) {
        Py_RETURN_NONE;
    }
    int rid = (p[2] << 8) | p[3];
    Py_ssize_t pos = 16 + p[6];
    if (rid == 0 || pos > end || p[8] != 0 || p[9] != 1) {
        Py_RETURN_NONE;
    }
    int keep = p[10] & 1;
    segment params[MAX_SEGMENTS], body[MAX_SEGMENTS];
    int nparams, nbody;
    Py_ssize_t params_size, body_size;
    if (!read_stream(p, end, &pos, 4, rid, params, &nparams, &params_size) ||
        params_size > max_bytes ||
        !read_stream(p, end, &pos, 5, rid, body, &nbody, &body_size) || pos != end) {
        Py_RETURN_NONE;
    }
    unsigned char *owned;
    const unsigned char *block = join_segments(params, nparams, params_size, &owned);
    if (block == NULL) {
        return NULL;
    }
    PyObject *env = PyDict_Copy(args[1]);
    int ok = env == NULL ? -1 : fill_params(env, block, params_size, max_count);
    PyMem_Free(owned);
    if (ok > 0) {
        ok = fix_environ(env, args[2]);
    }
    if (ok <= 0) {
        Py_XDECREF(env);
        if (ok < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *data;
    if (nbody == 1) {
        data = PyBytes_FromStringAndSize((const char *)body[0].ptr, body[0].len);
    }
    else {
        data = PyBytes_FromStringAndSize(NULL, body_size);
        if (data != NULL) {
            char *out = PyBytes_AS_STRING(data);
            for (int i = 0; i < nbody; i++) {
                memcpy(out, body[i].ptr, (size_t)body[i].len);
                out += body[i].len;
            }
        }
    }
    if (data == NULL) {
        Py_DECREF(env);
        return NULL;
    }
    PyObject *result = PyTuple_New(4);
    if (result == NULL) {
        Py_DECREF(env);
        Py_DECREF(data);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, PyLong_FromLong(rid));
    PyTuple_SET_ITEM(result, 1, PyBool_FromLong(keep));
    PyTuple_SET_ITEM(result, 2, env);
    PyTuple_SET_ITEM(result, 3, data);
    if (PyTuple_GET_ITEM(result, 0) == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* A latin-1 str without CR, LF or NUL: its bytes, else NULL (not simple). */
static const Py_UCS1 *
header_text(PyObject *s, Py_ssize_t *len)
{
    if (!PyUnicode_CheckExact(s) || PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) {
        return NULL;
    }
    const Py_UCS1 *c = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (c[i] == '\r' || c[i] == '\n' || c[i] == '\0') {
            return NULL;
        }
    }
    *len = n;
    return c;
}

static int
is_content_length(const Py_UCS1 *c, Py_ssize_t n)
{
    static const char want[] = "content-length";
    if (n != 14) {
        return 0;
    }
    for (int i = 0; i < 14; i++) {
        Py_UCS1 ch = c[i];
        if (ch >= 'A' && ch <= 'Z') {
            ch |= 0x20;
        }
        if (ch != (Py_UCS1)want[i]) {
            return 0;
        }
    }
    return 1;
}

static PyObject *
header_block(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "header_block(status, headers) takes 2 arguments");
        return NULL;
    }
    PyObject *status = args[0], *headers = args[1];
    Py_ssize_t slen, n;
    const Py_UCS1 *s = header_text(status, &slen);
    if (s == NULL || slen < 3 || (slen > 3 && s[3] != ' ') || !PyList_CheckExact(headers)) {
        Py_RETURN_NONE;
    }
    for (int i = 0; i < 3; i++) {
        if (s[i] < '0' || s[i] > '9') {
            Py_RETURN_NONE;
        }
    }
    n = PyList_GET_SIZE(headers);
    /* "Status: " status CRLF, then name ": " value CRLF each, then CRLF */
    Py_ssize_t size = 8 + slen + 2 + 2;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *h = PyList_GET_ITEM(headers, i);
        Py_ssize_t nl = 0, vl = 0;
        if (!PyTuple_CheckExact(h) || PyTuple_GET_SIZE(h) != 2 ||
            header_text(PyTuple_GET_ITEM(h, 0), &nl) == NULL ||
            header_text(PyTuple_GET_ITEM(h, 1), &vl) == NULL) {
            Py_RETURN_NONE;
        }
        size += nl + vl + 4;
    }
    PyObject *block = PyBytes_FromStringAndSize(NULL, size);
    if (block == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(block);
    PyObject *length = NULL;
    memcpy(out, "Status: ", 8);
    memcpy(out + 8, s, (size_t)slen);
    out += 8 + slen;
    *out++ = '\r';
    *out++ = '\n';
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *h = PyList_GET_ITEM(headers, i);
        Py_ssize_t nl = 0, vl = 0;
        const Py_UCS1 *name = header_text(PyTuple_GET_ITEM(h, 0), &nl);
        const Py_UCS1 *value = header_text(PyTuple_GET_ITEM(h, 1), &vl);
        memcpy(out, name, (size_t)nl);
        out += nl;
        *out++ = ':';
        *out++ = ' ';
        memcpy(out, value, (size_t)vl);
        out += vl;
        *out++ = '\r';
        *out++ = '\n';
        if (length == NULL && is_content_length(name, nl) && vl > 0) {
            int digits = 1;
            for (Py_ssize_t j = 0; j < vl; j++) {
                digits &= value[j] >= '0' && value[j] <= '9';
            }
            if (digits) {
                length = PyLong_FromUnicodeObject(PyTuple_GET_ITEM(h, 1), 10);
                if (length == NULL) {
                    Py_DECREF(block);
                    return NULL;
                }
            }
        }
    }
    *out++ = '\r';
    *out++ = '\n';
    int code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    if (length == NULL) {
        length = Py_None;
        Py_INCREF(length);
    }
    return Py_BuildValue("(NNi)", block, length, code);
}

static PyMethodDef methods[] = {
    {"request", (PyCFunction)(void (*)(void))request, METH_FASTCALL,
     "request(data, base, root_path, max_params_bytes, max_params_count) -> "
     "(request_id, keep_conn, environ, body) or None"},
    {"header_block", (PyCFunction)(void (*)(void))header_block, METH_FASTCALL,
     "header_block(status, headers) -> (block, content_length, code) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "The sync worker's C fast path (optional speedup).", 0,
    methods,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (init_names() < 0) {
        return NULL;
    }
    return PyModule_Create(&module);
}
