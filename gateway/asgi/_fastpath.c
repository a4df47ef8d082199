/* Optional C speedup for the async worker: a whole simple request in one buffer -> its
 * params, params -> the ASGI HTTP scope, and the response's header block.
 *
 * Why C here: with nginx's default (no fastcgi_keep_conn) every request is a new
 * connection whose first read holds BEGIN_REQUEST, the PARAMS stream and the whole STDIN
 * stream. Taking that apart with the codec's events (~550 bytecodes) and building the scope
 * in Python (~660) were half of the ~2,400 bytecodes a hello-world request ran in the async
 * worker (measured, CPython 3.11). Each function answers None for anything out of the
 * ordinary, and the caller then takes the ordinary path: the codec
 * (gateway/protocol/connection.py) for the bytes, gateway/asgi/scope.build_scope for the
 * scope, gateway/response.header_block for the headers. Those stay the reference
 * implementations and raise every error; tests/asgi/test_asgi_fastpath.py checks that this
 * module gives exactly what they give wherever it answers.
 *
 * request(data, max_params_bytes, max_params_count)
 *     -> (request_id, keep_conn, params, body) | None
 *   ``data`` must be exactly one RESPONDER request (see _whole_request.h); ``params`` is
 *   the list of (name, value) bytes pairs the codec would give.
 * scope(params, root_path, state, role, request_id, connection, asgi) -> dict | None
 *   build_scope's result (a percent-encoded path unquoted as decode_path does); None
 *   when it would need the rare cases (no REQUEST_URI, a port that is not plain digits).
 * header_block(status, headers, status_lines) -> bytes | None
 *   gateway/response.header_block's block for http.response.start; None for a status not
 *   in ``status_lines`` and for headers that are not a list or tuple of 2-item tuples or
 *   lists of bytes free of CR, LF and NUL (the reference then raises, or copes).
 *
 * No I/O. State: the item cache (_pairs_items.h) and the param-name table below; the GIL
 * guards both.
 */
#include "../protocol/_pairs_items.h"
#include "../protocol/_whole_request.h"
#include "../protocol/_unquote.h"

enum {
    METHOD, REQUEST_URI, QUERY_STRING, SCRIPT_NAME, PATH_INFO, PROTOCOL, SCHEME, HTTPS,
    REMOTE_ADDR, REMOTE_PORT, SERVER_ADDR, SERVER_NAME, SERVER_PORT, CONTENT_TYPE,
    CONTENT_LENGTH, HTTP_CONTENT_TYPE, HTTP_CONTENT_LENGTH, NCGI
};
static const char *cgi_names[NCGI] = {
    "REQUEST_METHOD", "REQUEST_URI", "QUERY_STRING", "SCRIPT_NAME", "PATH_INFO",
    "SERVER_PROTOCOL", "REQUEST_SCHEME", "HTTPS", "REMOTE_ADDR", "REMOTE_PORT", "SERVER_ADDR",
    "SERVER_NAME", "SERVER_PORT", "CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_TYPE",
    "HTTP_CONTENT_LENGTH",
};

/* param name -> what it is (scope.py's _NAMES): an int, the index of a CGI variable; the
 * cookie marker; bytes, a header name (b"": ignored). Grows as names are seen, within a
 * bound (clients choose header names). */
static PyObject *names;
#define NAMES_MAX 1024
static PyObject *cookie_marker;
static PyObject *empty_bytes;
static PyObject *s_http, *s_https, *s_get, *s_type, *s_asgi, *s_http_version,
    *s_method, *s_scheme, *s_path, *s_raw_path, *s_query_string, *s_root_path, *s_headers,
    *s_client, *s_server, *s_extensions, *s_fastcgi, *s_params, *s_role, *s_request_id,
    *s_connection, *s_state, *b_content_type, *b_content_length, *b_cookie, *b_cookie_sep;
#define NMETHODS 7
static const char *method_names[NMETHODS] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
                                             "OPTIONS"};
static PyObject *methods_str[NMETHODS];

static PyObject *
params_list(const unsigned char *p, Py_ssize_t end, Py_ssize_t max_count)
{
    PyObject *pairs = PyList_New(0);
    Py_ssize_t pos = 0;
    while (pairs != NULL && pos < end) {
        Py_ssize_t n = read_length(p, end, &pos);
        Py_ssize_t v = n < 0 ? -1 : read_length(p, end, &pos);
        if (v < 0 || n > end - pos || v > end - pos - n || PyList_GET_SIZE(pairs) >= max_count) {
            Py_DECREF(pairs);
            Py_RETURN_NONE; /* the codec raises the precise error */
        }
        Py_ssize_t slot = 2 * PyList_GET_SIZE(pairs);
        PyObject *name = make_item(p + pos, n, 0, slot);
        PyObject *value = name == NULL ? NULL : make_item(p + pos + n, v, 0, slot + 1);
        PyObject *pair = value == NULL ? NULL : PyTuple_Pack(2, name, value);
        Py_XDECREF(name);
        Py_XDECREF(value);
        if (pair == NULL || PyList_Append(pairs, pair) < 0) {
            Py_XDECREF(pair);
            Py_CLEAR(pairs);
            break;
        }
        Py_DECREF(pair);
        pos += n + v;
    }
    return pairs;
}

static PyObject *
request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyLong_Check(args[1]) ||
        !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "request(data: bytes, max_params_bytes: int, max_params_count: int)");
        return NULL;
    }
    whole_request r;
    Py_ssize_t max_count;
    const unsigned char *block;
    unsigned char *owned;
    int taken = take_whole(args[0], args[1], args[2], &r, &max_count, &block, &owned);
    if (taken <= 0) {
        if (taken < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *params = params_list(block, r.params_size, max_count);
    PyMem_Free(owned);
    if (params == NULL || params == Py_None) {
        return params;
    }
    return whole_result(&r, params);
}

/* scope.py's _classify: what a param name not seen yet is (new reference). */
static PyObject *
classify(PyObject *name)
{
    const char *c = PyBytes_AS_STRING(name);
    Py_ssize_t n = PyBytes_GET_SIZE(name);
    PyObject *what;
    if (n >= 5 && memcmp(c, "HTTP_", 5) == 0) {
        what = PyBytes_FromStringAndSize(NULL, n - 5);
        if (what == NULL) {
            return NULL;
        }
        char *out = PyBytes_AS_STRING(what);
        for (Py_ssize_t i = 5; i < n; i++) {
            char ch = c[i];
            *out++ = ch == '_' ? '-' : (ch >= 'A' && ch <= 'Z') ? (char)(ch | 0x20) : ch;
        }
    }
    else {
        what = Py_NewRef(empty_bytes);
    }
    if (PyDict_GET_SIZE(names) < NAMES_MAX && PyDict_SetItem(names, name, what) < 0) {
        Py_DECREF(what);
        return NULL;
    }
    return what;
}

/* A port: 0 when absent or empty, its value when plain digits, -1 otherwise (the Python
 * path decides: int() also takes signs, spaces and underscores, or fails). */
static long
port_of(PyObject *b)
{
    if (b == NULL || PyBytes_GET_SIZE(b) == 0) {
        return 0;
    }
    const char *c = PyBytes_AS_STRING(b);
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    if (n > 9) {
        return -1;
    }
    long v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (c[i] < '0' || c[i] > '9') {
            return -1;
        }
        v = v * 10 + (c[i] - '0');
    }
    return v;
}

static PyObject *
latin1(PyObject *b)
{
    return PyUnicode_DecodeLatin1(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), NULL);
}

/* scope.decode_path for a raw path with a '%': urllib.parse.unquote of its latin-1 text.
 * Each run of ASCII bytes is percent-decoded (%XX with two hex digits becomes its byte, any
 * other % stays) and decoded as UTF-8 with replacement; the bytes from 0x80 up between the
 * runs stay as latin-1 characters. A new str; NULL with an exception. */
static PyObject *
unquoted(PyObject *raw)
{
    const unsigned char *c = (const unsigned char *)PyBytes_AS_STRING(raw);
    Py_ssize_t n = PyBytes_GET_SIZE(raw);
    char *buf = PyMem_Malloc(n ? n : 1);
    PyObject *parts = PyList_New(0), *out = NULL;
    if (buf == NULL || parts == NULL) {
        PyMem_Free(buf);
        Py_XDECREF(parts);
        return PyErr_NoMemory();
    }
    Py_ssize_t i = 0;
    while (i < n) {
        Py_ssize_t start = i;
        PyObject *part;
        if (c[i] >= 0x80) {
            while (i < n && c[i] >= 0x80) {
                i++;
            }
            part = PyUnicode_DecodeLatin1((const char *)c + start, i - start, NULL);
        }
        else {
            while (i < n && c[i] < 0x80) {
                i++;
            }
            part = PyUnicode_DecodeUTF8(buf, unquote_run(c + start, i - start, buf), "replace");
        }
        if (part == NULL || PyList_Append(parts, part) < 0) {
            Py_XDECREF(part);
            goto done;
        }
        Py_DECREF(part);
    }
    PyObject *empty = PyUnicode_New(0, 0);
    out = empty == NULL ? NULL : PyUnicode_Join(empty, parts);
    Py_XDECREF(empty);
done:
    PyMem_Free(buf);
    Py_DECREF(parts);
    return out;
}

static int
truthy(PyObject *b)
{
    return b != NULL && PyBytes_GET_SIZE(b) > 0;
}

static int
add_header(PyObject *headers, PyObject *name, PyObject *value)
{
    PyObject *pair = PyTuple_Pack(2, name, value);
    int failed = pair == NULL || PyList_Append(headers, pair) < 0;
    Py_XDECREF(pair);
    return failed ? -1 : 0;
}

/* The headers (HTTP_* params, then content-type, content-length, cookie) into ``headers``,
 * the CGI variables into ``cgi`` (borrowed from ``params``): 1 done, 0 not simple, -1
 * error. */
static int
sort_params(PyObject *params, PyObject **cgi, PyObject *headers)
{
    PyObject *cookies = NULL;
    Py_ssize_t n = PyList_GET_SIZE(params);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(params, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            Py_XDECREF(cookies);
            return 0;
        }
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        PyObject *what = PyDict_GetItemWithError(names, name);
        if (what != NULL) {
            Py_INCREF(what);
        }
        else if (PyErr_Occurred() || (what = classify(name)) == NULL) {
            Py_XDECREF(cookies);
            return -1;
        }
        int failed = 0;
        if (PyLong_CheckExact(what)) {
            cgi[PyLong_AsLong(what)] = value;
        }
        else if (what == cookie_marker) {
            failed = (cookies == NULL && (cookies = PyList_New(0)) == NULL) ||
                     PyList_Append(cookies, value) < 0;
        }
        else if (PyBytes_GET_SIZE(what) > 0) {
            failed = add_header(headers, what, value) < 0;
        }
        Py_DECREF(what);
        if (failed) {
            Py_XDECREF(cookies);
            return -1;
        }
    }
    PyObject *ct = truthy(cgi[CONTENT_TYPE]) ? cgi[CONTENT_TYPE] : cgi[HTTP_CONTENT_TYPE];
    PyObject *cl = truthy(cgi[CONTENT_LENGTH]) ? cgi[CONTENT_LENGTH] : cgi[HTTP_CONTENT_LENGTH];
    if ((truthy(ct) && add_header(headers, b_content_type, ct) < 0) ||
        (truthy(cl) && add_header(headers, b_content_length, cl) < 0)) {
        Py_XDECREF(cookies);
        return -1;
    }
    if (cookies != NULL) {
        PyObject *joined = PyObject_CallMethod(b_cookie_sep, "join", "O", cookies);
        Py_DECREF(cookies);
        int failed = joined == NULL || add_header(headers, b_cookie, joined) < 0;
        Py_XDECREF(joined);
        if (failed) {
            return -1;
        }
    }
    return 1;
}

/* scheme: "https" when HTTPS is set and not "off", else REQUEST_SCHEME (default http). */
static PyObject *
scheme_of(PyObject **cgi)
{
    PyObject *https = cgi[HTTPS], *raw = cgi[SCHEME];
    if (truthy(https)) {
        const char *h = PyBytes_AS_STRING(https);
        if (!(PyBytes_GET_SIZE(https) == 3 && (h[0] | 0x20) == 'o' && (h[1] | 0x20) == 'f' &&
              (h[2] | 0x20) == 'f')) {
            return Py_NewRef(s_https);
        }
    }
    if (raw == NULL || PyBytes_GET_SIZE(raw) == 0) {
        return Py_NewRef(s_http);
    }
    const char *c = PyBytes_AS_STRING(raw);
    Py_ssize_t n = PyBytes_GET_SIZE(raw);
    if (n == 4 && memcmp(c, "http", 4) == 0) {
        return Py_NewRef(s_http);
    }
    if (n == 5 && memcmp(c, "https", 5) == 0) {
        return Py_NewRef(s_https);
    }
    return latin1(raw);
}

static PyObject *
method_of(PyObject *m)
{
    if (m == NULL) {
        return Py_NewRef(s_get);
    }
    for (int i = 0; i < NMETHODS; i++) {
        if ((size_t)PyBytes_GET_SIZE(m) == strlen(method_names[i]) &&
            memcmp(PyBytes_AS_STRING(m), method_names[i], strlen(method_names[i])) == 0) {
            return Py_NewRef(methods_str[i]);
        }
    }
    return latin1(m);
}

#define NVERSIONS 5
static const char *versions_wire[NVERSIONS] = {"HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/2",
                                               "HTTP/3"};
static const char *versions_asgi[NVERSIONS] = {"1.1", "1.0", "2", "2", "3"};
static PyObject *versions_str[NVERSIONS];

static PyObject *
http_version_of(PyObject *proto)
{
    if (proto != NULL) {
        for (int i = 0; i < NVERSIONS; i++) {
            if ((size_t)PyBytes_GET_SIZE(proto) == strlen(versions_wire[i]) &&
                memcmp(PyBytes_AS_STRING(proto), versions_wire[i], strlen(versions_wire[i])) == 0) {
                return Py_NewRef(versions_str[i]);
            }
        }
    }
    return Py_NewRef(versions_str[0]);
}

/* (host, port) from an address and a port param; Py_None without an address; NULL with no
 * exception when the port is not plain digits (not simple). */
static PyObject *
endpoint(PyObject *addr, PyObject *port)
{
    if (!truthy(addr)) {
        return Py_NewRef(Py_None);
    }
    long p = port_of(port);
    if (p < 0) {
        return NULL;
    }
    return Py_BuildValue("(Nl)", latin1(addr), p);
}

static PyObject *
scope(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyList_CheckExact(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "scope(params: list, root_path: str, state, role, request_id, "
                        "connection, asgi)");
        return NULL;
    }
    PyObject *params = args[0], *root_path = args[1], *state = args[2];
    PyObject *cgi[NCGI] = {NULL};
    PyObject *headers = PyList_New(0);
    if (headers == NULL) {
        return NULL;
    }
    int ok = sort_params(params, cgi, headers);
    PyObject *request_uri = cgi[REQUEST_URI];
    if (ok <= 0 || request_uri == NULL) {
        Py_DECREF(headers);
        if (ok < 0) {
            return NULL;
        }
        Py_RETURN_NONE; /* build_scope: the path from SCRIPT_NAME + PATH_INFO, quoted */
    }
    const char *uri = PyBytes_AS_STRING(request_uri);
    Py_ssize_t ulen = PyBytes_GET_SIZE(request_uri);
    const char *q = memchr(uri, '?', (size_t)ulen);
    Py_ssize_t plen = q == NULL ? ulen : q - uri;
    long remote_port = port_of(cgi[REMOTE_PORT]);
    PyObject *server_addr = truthy(cgi[SERVER_ADDR]) ? cgi[SERVER_ADDR] : cgi[SERVER_NAME];
    long server_port = port_of(cgi[SERVER_PORT]);
    int quoted = memchr(uri, '%', (size_t)plen) != NULL;
    if ((truthy(cgi[REMOTE_ADDR]) && remote_port < 0) || (truthy(server_addr) && server_port < 0)) {
        Py_DECREF(headers);
        Py_RETURN_NONE; /* build_scope: int() of an odd port */
    }
    PyObject *root = PyUnicode_GET_LENGTH(root_path) == 0 && truthy(cgi[PATH_INFO])
                         ? cgi[SCRIPT_NAME] != NULL ? latin1(cgi[SCRIPT_NAME]) : PyUnicode_New(0, 0)
                         : Py_NewRef(root_path);
    PyObject *fastcgi = PyDict_New();
    if (root == NULL || fastcgi == NULL || PyDict_SetItem(fastcgi, s_params, params) < 0 ||
        PyDict_SetItem(fastcgi, s_role, args[3]) < 0 ||
        PyDict_SetItem(fastcgi, s_request_id, args[4]) < 0 ||
        PyDict_SetItem(fastcgi, s_connection, args[5]) < 0) {
        Py_XDECREF(root);
        Py_XDECREF(fastcgi);
        Py_DECREF(headers);
        return NULL;
    }
    /* The items in build_scope's order; each step runs only while all before succeeded. */
    PyObject *values[13] = {NULL};
    PyObject *keys[13] = {s_type, s_asgi, s_http_version, s_method, s_scheme, s_path,
                          s_raw_path, s_query_string, s_root_path, s_headers, s_client,
                          s_server, s_extensions};
    values[9] = headers;
    values[8] = root;
    PyObject *result = NULL;
    if ((values[0] = Py_NewRef(s_http)) && (values[1] = Py_NewRef(args[6])) &&
        (values[2] = http_version_of(cgi[PROTOCOL])) && (values[3] = method_of(cgi[METHOD])) &&
        (values[4] = scheme_of(cgi)) &&
        (values[6] = plen == ulen ? Py_NewRef(request_uri) : PyBytes_FromStringAndSize(uri, plen)) &&
        (values[5] = quoted ? unquoted(values[6]) : latin1(values[6])) &&
        (values[7] = cgi[QUERY_STRING] != NULL ? Py_NewRef(cgi[QUERY_STRING])
                     : q == NULL ? Py_NewRef(empty_bytes)
                                 : PyBytes_FromStringAndSize(q + 1, ulen - plen - 1)) &&
        (values[10] = endpoint(cgi[REMOTE_ADDR], cgi[REMOTE_PORT])) &&
        (values[11] = endpoint(server_addr, cgi[SERVER_PORT])) &&
        (values[12] = PyDict_New()) &&
        PyDict_SetItem(values[12], s_fastcgi, fastcgi) == 0 &&
        (result = PyDict_New()) != NULL) {
        for (int i = 0; i < 13; i++) {
            if (PyDict_SetItem(result, keys[i], values[i]) < 0) {
                Py_CLEAR(result);
                break;
            }
        }
    }
    for (int i = 0; i < 13; i++) {
        Py_XDECREF(values[i]);
    }
    Py_DECREF(fastcgi);
    if (result != NULL && state != Py_None) {
        PyObject *copy = PyObject_CallMethod(state, "copy", NULL);
        if (copy == NULL || PyDict_SetItem(result, s_state, copy) < 0) {
            Py_CLEAR(result);
        }
        Py_XDECREF(copy);
    }
    return result;
}

/* Exact bytes without CR, LF or NUL: 1, else 0. */
static int
clean_bytes(PyObject *b)
{
    if (!PyBytes_CheckExact(b)) {
        return 0;
    }
    const unsigned char *c = (const unsigned char *)PyBytes_AS_STRING(b);
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (c[i] == '\r' || c[i] == '\n' || c[i] == '\0') {
            return 0;
        }
    }
    return 1;
}

/* A header: a 2-item tuple or list; its name and value (borrowed), else 0. */
static int
header_pair(PyObject *h, PyObject **name, PyObject **value)
{
    if (PyTuple_CheckExact(h) && PyTuple_GET_SIZE(h) == 2) {
        *name = PyTuple_GET_ITEM(h, 0);
        *value = PyTuple_GET_ITEM(h, 1);
    }
    else if (PyList_CheckExact(h) && PyList_GET_SIZE(h) == 2) {
        *name = PyList_GET_ITEM(h, 0);
        *value = PyList_GET_ITEM(h, 1);
    }
    else {
        return 0;
    }
    return clean_bytes(*name) && clean_bytes(*value);
}

static PyObject *
header_block(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "header_block(status, headers, status_lines: dict)");
        return NULL;
    }
    PyObject *headers = args[1];
    PyObject *line = PyLong_CheckExact(args[0]) ? PyDict_GetItemWithError(args[2], args[0]) : NULL;
    if (line == NULL || !PyBytes_CheckExact(line) ||
        !(PyList_CheckExact(headers) || PyTuple_CheckExact(headers))) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE; /* response.header_block: an unknown code, or odd headers */
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(headers);
    PyObject **items = PySequence_Fast_ITEMS(headers);
    Py_ssize_t size = PyBytes_GET_SIZE(line) + 2;
    PyObject *name, *value;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!header_pair(items[i], &name, &value)) {
            Py_RETURN_NONE;
        }
        size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4;
    }
    PyObject *block = PyBytes_FromStringAndSize(NULL, size);
    if (block == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(block);
    memcpy(out, PyBytes_AS_STRING(line), (size_t)PyBytes_GET_SIZE(line));
    out += PyBytes_GET_SIZE(line);
    for (Py_ssize_t i = 0; i < n; i++) {
        header_pair(items[i], &name, &value);
        memcpy(out, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
        out += PyBytes_GET_SIZE(name);
        *out++ = ':';
        *out++ = ' ';
        memcpy(out, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
        out += PyBytes_GET_SIZE(value);
        *out++ = '\r';
        *out++ = '\n';
    }
    *out++ = '\r';
    *out++ = '\n';
    return block;
}

static PyMethodDef methods[] = {
    {"request", (PyCFunction)(void (*)(void))request, METH_FASTCALL,
     "request(data, max_params_bytes, max_params_count) -> "
     "(request_id, keep_conn, params, body) or None"},
    {"scope", (PyCFunction)(void (*)(void))scope, METH_FASTCALL,
     "scope(params, root_path, state, role, request_id, connection, asgi) -> dict or None"},
    {"header_block", (PyCFunction)(void (*)(void))header_block, METH_FASTCALL,
     "header_block(status, headers, status_lines) -> bytes or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "The async worker's C fast path (optional speedup).",
    0, methods,
};

static int
init_tables(void)
{
    names = PyDict_New();
    cookie_marker = PyBytes_FromString("cookie"); /* only its identity matters */
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (names == NULL || cookie_marker == NULL || empty_bytes == NULL) {
        return -1;
    }
    for (int i = 0; i < NCGI; i++) {
        PyObject *k = PyBytes_FromString(cgi_names[i]), *v = PyLong_FromLong(i);
        int failed = k == NULL || v == NULL || PyDict_SetItem(names, k, v) < 0;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (failed) {
            return -1;
        }
    }
    PyObject *cookie_name = PyBytes_FromString("HTTP_COOKIE");
    int failed = cookie_name == NULL || PyDict_SetItem(names, cookie_name, cookie_marker) < 0;
    Py_XDECREF(cookie_name);
    if (failed) {
        return -1;
    }
    PyObject **strs[] = {&s_http, &s_https, &s_get, &s_type, &s_asgi, &s_http_version,
                         &s_method, &s_scheme, &s_path, &s_raw_path, &s_query_string,
                         &s_root_path, &s_headers, &s_client, &s_server, &s_extensions,
                         &s_fastcgi, &s_params, &s_role, &s_request_id, &s_connection,
                         &s_state};
    const char *texts[] = {"http", "https", "GET", "type", "asgi", "http_version",
                           "method", "scheme", "path", "raw_path", "query_string", "root_path",
                           "headers", "client", "server", "extensions", "fastcgi", "params",
                           "role", "request_id", "connection", "state"};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        if ((*strs[i] = PyUnicode_InternFromString(texts[i])) == NULL) {
            return -1;
        }
    }
    for (int i = 0; i < NMETHODS; i++) {
        if ((methods_str[i] = PyUnicode_InternFromString(method_names[i])) == NULL) {
            return -1;
        }
    }
    for (int i = 0; i < NVERSIONS; i++) {
        if ((versions_str[i] = PyUnicode_InternFromString(versions_asgi[i])) == NULL) {
            return -1;
        }
    }
    b_content_type = PyBytes_FromString("content-type");
    b_content_length = PyBytes_FromString("content-length");
    b_cookie = PyBytes_FromString("cookie");
    b_cookie_sep = PyBytes_FromString("; ");
    return b_content_type && b_content_length && b_cookie && b_cookie_sep ? 0 : -1;
}

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (init_tables() < 0) {
        return NULL;
    }
    return PyModule_Create(&module);
}
