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
 *   fix-ups (percent-decoding the path from REQUEST_URI included); None when it would need
 *   the rare one: a repeated header, which build_environ joins.
 * header_block(status, headers) -> (block: bytes, content_length: int | None, code: int) | None
 *
 * Recognising the whole request is shared with the async worker's fast path
 * (../protocol/_whole_request.h); the environ fix-ups are in _environ_fixups.h. No I/O;
 * the item cache (_pairs_items.h) is its only state, and the GIL guards it.
 */
#include "../protocol/_pairs_items.h"
#include "../protocol/_whole_request.h"
#include "../protocol/_unquote.h"
#include "_environ_fixups.h"

/* The params into ``env``: 1 done, 0 not simple (malformed, too many, a repeated HTTP_
 * name: build_environ joins those), -1 error. Any other repeated name (nginx configs often
 * set SCRIPT_NAME or PATH_INFO again after ``include fastcgi_params``), or one the base
 * already has, takes the last value in the first one's place, as build_environ does. */
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
        if (seen < 0 || (seen && n >= 5 && memcmp(p + pos, "HTTP_", 5) == 0)) {
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
    whole_request r;
    Py_ssize_t max_count;
    const unsigned char *block;
    unsigned char *owned;
    int taken = take_whole(args[0], args[3], args[4], &r, &max_count, &block, &owned);
    if (taken <= 0) {
        if (taken < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *env = PyDict_Copy(args[1]);
    int ok = env == NULL ? -1 : fill_params(env, block, r.params_size, max_count);
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
    return whole_result(&r, env);
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
