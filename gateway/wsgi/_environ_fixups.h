/* build_environ's fix-ups (gateway/wsgi/environ.py), in C, for gateway/wsgi/_fastpath.c:
 * CONTENT_TYPE/CONTENT_LENGTH against their HTTP_ twins, SCRIPT_NAME/PATH_INFO/QUERY_STRING
 * from REQUEST_URI (or the server's own split), --root-path, wsgi.url_scheme, SERVER_NAME
 * and SERVER_PORT defaults. Each function mirrors the Python code it is named after and
 * answers 0 ("not simple": let build_environ do it) for a case it does not cover. Needs
 * ../protocol/_unquote.h included first. Static functions over interned names; no I/O.
 */
#ifndef GATEWAY_ENVIRON_FIXUPS_H
#define GATEWAY_ENVIRON_FIXUPS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Keys and values, interned at import. */
static PyObject *K_CONTENT_TYPE, *K_HTTP_CONTENT_TYPE, *K_CONTENT_LENGTH, *K_HTTP_CONTENT_LENGTH,
    *K_PATH_INFO, *K_SCRIPT_NAME, *K_REQUEST_URI, *K_QUERY_STRING, *K_HTTPS, *K_URL_SCHEME,
    *K_REQUEST_SCHEME, *K_SERVER_NAME, *K_HTTP_HOST, *K_SERVER_ADDR, *K_SERVER_PORT,
    *K_REQUEST_METHOD, *K_SERVER_PROTOCOL, *V_EMPTY, *V_HTTPS, *V_HTTP, *V_443, *V_80, *V_GET,
    *V_HTTP11, *V_SLASH, *V_LOCALHOST;

static inline int
nonempty(PyObject *s)
{
    return s != NULL && PyUnicode_Check(s) && PyUnicode_GET_LENGTH(s) > 0;
}

/* CONTENT_TYPE/CONTENT_LENGTH as build_environ leaves them. */
static int
fix_content(PyObject *env, PyObject *key, PyObject *http_key)
{
    PyObject *value = PyDict_GetItemWithError(env, key);
    PyObject *http = PyDict_GetItemWithError(env, http_key);
    if (PyErr_Occurred()) {
        return -1;
    }
    if (http == NULL && nonempty(value)) {
        return 0;
    }
    Py_XINCREF(http);
    if (http != NULL && PyDict_DelItem(env, http_key) < 0) {
        goto error;
    }
    if (!nonempty(value)) {
        if (value != NULL && PyDict_DelItem(env, key) < 0) {
            goto error;
        }
        if (nonempty(http) && PyDict_SetItem(env, key, http) < 0) {
            goto error;
        }
    }
    Py_XDECREF(http);
    return 0;
error:
    Py_XDECREF(http);
    return -1;
}

static int
ascii_digits(PyObject *s)
{
    if (PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) {
        return 0;
    }
    const Py_UCS1 *c = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (c[i] < '0' || c[i] > '9') {
            return 0;
        }
    }
    return n > 0;
}

/* environ.wsgi_path: unquote_run (../protocol/_unquote.h) over the bytes of ``s`` (a
 * latin-1 str), as a latin-1 str (WSGI's "bytes as str"). */
static PyObject *
percent_decoded(PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    char *buf = PyMem_Malloc(n ? n : 1);
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t j = unquote_run(PyUnicode_1BYTE_DATA(s), n, buf);
    PyObject *out = PyUnicode_DecodeLatin1(buf, j, NULL);
    PyMem_Free(buf);
    return out;
}

/* SCRIPT_NAME/PATH_INFO/QUERY_STRING: 1 done, 0 not simple, -1 error. */
static int
fix_paths(PyObject *env, PyObject *root)
{
    Py_ssize_t rlen = PyUnicode_GET_LENGTH(root);
    PyObject *path_info = PyDict_GetItemWithError(env, K_PATH_INFO);
    if (path_info != NULL) {
        if (rlen) {
            return PyDict_SetItem(env, K_SCRIPT_NAME, root) < 0 ? -1 : 1;
        }
        PyObject *script = PyDict_GetItemWithError(env, K_SCRIPT_NAME);
        if (script == NULL) {
            if (PyErr_Occurred()) {
                return -1;
            }
            return PyDict_SetItem(env, K_SCRIPT_NAME, V_EMPTY) < 0 ? -1 : 1;
        }
        if (!PyUnicode_Check(script) || PyUnicode_Compare(script, V_SLASH) != 0) {
            return 1;
        }
        if (PyDict_SetItem(env, K_SCRIPT_NAME, V_EMPTY) < 0) {
            return -1;
        }
        if (PyUnicode_GET_LENGTH(path_info) > 0 && PyUnicode_READ_CHAR(path_info, 0) == '/') {
            return 1;
        }
        PyObject *fixed = PyUnicode_Concat(V_SLASH, path_info);
        if (fixed == NULL) {
            return -1;
        }
        int failed = PyDict_SetItem(env, K_PATH_INFO, fixed);
        Py_DECREF(fixed);
        return failed ? -1 : 1;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *full;
    PyObject *uri = PyDict_GetItemWithError(env, K_REQUEST_URI);
    if (uri != NULL) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(uri);
        Py_ssize_t q = PyUnicode_FindChar(uri, '?', 0, n, 1);
        if (q == -2) {
            return -1;
        }
        Py_ssize_t pct = PyUnicode_FindChar(uri, '%', 0, q < 0 ? n : q, 1);
        if (pct == -2) {
            return -1;
        }
        if (pct >= 0 && PyUnicode_KIND(uri) != PyUnicode_1BYTE_KIND) {
            return 0; /* not from latin-1 bytes: wsgi_path's encode would fail */
        }
        int has_query = PyDict_Contains(env, K_QUERY_STRING);
        if (has_query < 0) {
            return -1;
        }
        if (q < 0) {
            Py_INCREF(uri);
            full = uri;
            if (!has_query && PyDict_SetItem(env, K_QUERY_STRING, V_EMPTY) < 0) {
                Py_DECREF(full);
                return -1;
            }
        }
        else {
            full = PyUnicode_Substring(uri, 0, q);
            if (full == NULL) {
                return -1;
            }
            if (!has_query) {
                PyObject *query = PyUnicode_Substring(uri, q + 1, n);
                int failed = query == NULL || PyDict_SetItem(env, K_QUERY_STRING, query) < 0;
                Py_XDECREF(query);
                if (failed) {
                    Py_DECREF(full);
                    return -1;
                }
            }
        }
        if (pct >= 0) {
            PyObject *decoded = percent_decoded(full);
            Py_DECREF(full);
            if (decoded == NULL) {
                return -1;
            }
            full = decoded;
        }
    }
    else {
        if (PyErr_Occurred()) {
            return -1;
        }
        full = PyDict_GetItemWithError(env, K_SCRIPT_NAME);
        if (full == NULL) {
            if (PyErr_Occurred()) {
                return -1;
            }
            full = V_EMPTY;
        }
        Py_INCREF(full);
    }
    PyObject *script = V_EMPTY, *path = full;
    Py_INCREF(path);
    if (rlen) {
        script = root;
        Py_ssize_t flen = PyUnicode_GET_LENGTH(full);
        if (flen >= rlen && PyUnicode_Tailmatch(full, root, 0, rlen, -1) == 1 &&
            (flen == rlen || PyUnicode_READ_CHAR(full, rlen) == '/')) {
            Py_DECREF(path);
            path = PyUnicode_Substring(full, rlen, flen);
        }
    }
    int failed = path == NULL || PyDict_SetItem(env, K_SCRIPT_NAME, script) < 0 ||
                 PyDict_SetItem(env, K_PATH_INFO, path) < 0;
    Py_XDECREF(path);
    Py_DECREF(full);
    return failed ? -1 : 1;
}

static int
is_off(PyObject *s)
{
    if (PyUnicode_GET_LENGTH(s) != 3 || PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) {
        return 0;
    }
    const Py_UCS1 *c = PyUnicode_1BYTE_DATA(s);
    return (c[0] | 0x20) == 'o' && (c[1] | 0x20) == 'f' && (c[2] | 0x20) == 'f';
}

static int
set_default(PyObject *env, PyObject *key, PyObject *value)
{
    PyObject *got = PyDict_SetDefault(env, key, value);
    return got == NULL ? -1 : 0;
}

/* An empty SERVER_NAME (nginx's, when the server block has no server_name): the Host
 * header without its port, else SERVER_ADDR, else "localhost". */
static int
set_server_name(PyObject *env)
{
    PyObject *name = NULL;
    PyObject *host = PyDict_GetItemWithError(env, K_HTTP_HOST);
    if (nonempty(host)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(host);
        Py_ssize_t colon = PyUnicode_FindChar(host, ':', 0, n, -1);
        Py_ssize_t bracket = PyUnicode_FindChar(host, ']', 0, n, -1);
        if (colon == -2 || bracket == -2) {
            return -1;
        }
        if (colon > bracket) {
            if (colon > 0) {
                name = PyUnicode_Substring(host, 0, colon);
                if (name == NULL) {
                    return -1;
                }
            }
        }
        else {
            name = host;
            Py_INCREF(name);
        }
    }
    if (name == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        PyObject *addr = PyDict_GetItemWithError(env, K_SERVER_ADDR);
        name = nonempty(addr) ? addr : V_LOCALHOST;
        Py_INCREF(name);
        if (PyErr_Occurred()) {
            Py_DECREF(name);
            return -1;
        }
    }
    int failed = PyDict_SetItem(env, K_SERVER_NAME, name);
    Py_DECREF(name);
    return failed ? -1 : 0;
}

/* The rest of build_environ: 1 done, 0 not simple, -1 error. */
static int
fix_environ(PyObject *env, PyObject *root)
{
    if (fix_content(env, K_CONTENT_TYPE, K_HTTP_CONTENT_TYPE) < 0 ||
        fix_content(env, K_CONTENT_LENGTH, K_HTTP_CONTENT_LENGTH) < 0) {
        return -1;
    }
    PyObject *clen = PyDict_GetItemWithError(env, K_CONTENT_LENGTH);
    if (clen != NULL && nonempty(clen) && !ascii_digits(clen) &&
        PyDict_DelItem(env, K_CONTENT_LENGTH) < 0) {
        return -1;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    int paths = fix_paths(env, root);
    if (paths <= 0) {
        return paths;
    }
    PyObject *https = PyDict_GetItemWithError(env, K_HTTPS);
    PyObject *scheme;
    int secure = 0;
    if (nonempty(https) && !is_off(https)) {
        scheme = V_HTTPS;
        secure = 1;
    }
    else {
        scheme = PyDict_GetItemWithError(env, K_REQUEST_SCHEME);
        if (!nonempty(scheme)) {
            scheme = V_HTTP;
        }
        else {
            secure = PyUnicode_Compare(scheme, V_HTTPS) == 0;
        }
    }
    if (PyErr_Occurred() || PyDict_SetItem(env, K_URL_SCHEME, scheme) < 0) {
        return -1;
    }
    if (!nonempty(PyDict_GetItemWithError(env, K_SERVER_NAME))) {
        if (PyErr_Occurred() || set_server_name(env) < 0) {
            return -1;
        }
    }
    if (!nonempty(PyDict_GetItemWithError(env, K_SERVER_PORT))) {
        if (PyErr_Occurred() || PyDict_SetItem(env, K_SERVER_PORT, secure ? V_443 : V_80) < 0) {
            return -1;
        }
    }
    if (set_default(env, K_REQUEST_METHOD, V_GET) < 0 ||
        set_default(env, K_QUERY_STRING, V_EMPTY) < 0 ||
        set_default(env, K_SERVER_PROTOCOL, V_HTTP11) < 0) {
        return -1;
    }
    return 1;
}

/* Intern the names and values above (once). -1 on error. */
static int
init_names(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&K_CONTENT_TYPE, "CONTENT_TYPE"},
        {&K_HTTP_CONTENT_TYPE, "HTTP_CONTENT_TYPE"},
        {&K_CONTENT_LENGTH, "CONTENT_LENGTH"},
        {&K_HTTP_CONTENT_LENGTH, "HTTP_CONTENT_LENGTH"},
        {&K_PATH_INFO, "PATH_INFO"},
        {&K_SCRIPT_NAME, "SCRIPT_NAME"},
        {&K_REQUEST_URI, "REQUEST_URI"},
        {&K_QUERY_STRING, "QUERY_STRING"},
        {&K_HTTPS, "HTTPS"},
        {&K_URL_SCHEME, "wsgi.url_scheme"},
        {&K_REQUEST_SCHEME, "REQUEST_SCHEME"},
        {&K_SERVER_NAME, "SERVER_NAME"},
        {&K_HTTP_HOST, "HTTP_HOST"},
        {&K_SERVER_ADDR, "SERVER_ADDR"},
        {&V_LOCALHOST, "localhost"},
        {&K_SERVER_PORT, "SERVER_PORT"},
        {&K_REQUEST_METHOD, "REQUEST_METHOD"},
        {&K_SERVER_PROTOCOL, "SERVER_PROTOCOL"},
        {&V_EMPTY, ""},
        {&V_HTTPS, "https"},
        {&V_HTTP, "http"},
        {&V_443, "443"},
        {&V_80, "80"},
        {&V_GET, "GET"},
        {&V_HTTP11, "HTTP/1.1"},
        {&V_SLASH, "/"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) {
            return -1;
        }
    }
    return 0;
}

#endif
