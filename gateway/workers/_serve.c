/* Optional C speedup for the sync worker: serve, start to finish, a request that came whole
 * in one read: the first of a new connection without FCGI_KEEP_CONN (nginx's default), or
 * one on a kept-alive connection (``fastcgi_keep_conn on``), whose codec ends it.
 *
 * Why C here: with the request parse and the environ already in C (gateway/wsgi/_fastpath.c),
 * the worker's own Python for such a request (the codec's state, the responder,
 * start_response, framing the response: ~720 of its ~935 bytecodes) was what still made it
 * cost more instructions than uWSGI: hello world 84k a request against uWSGI's 56k, a Flask
 * view 3% more (``bench/run --instructions``; with this module 47k, and the Flask view
 * equal to uWSGI's). This module does those steps in C for the ordinary case and
 * hands everything else to the Python responder (gateway/wsgi/handler.WSGIResponder), which
 * stays the reference: tests/wsgi/test_serve.py checks that a worker answers byte for byte
 * the same with and without this module.
 *
 * Server(app, baseline, base, root_path, max_params_bytes, max_params_count, max_body_bytes,
 *        errors, parse, header_block, reference_head, make_input, handoff, note,
 *        file_wrapper, client_gone)
 * Server.serve(sock, data) ->
 *     None          ``data`` is not one whole request: the codec path takes it;
 *     a tuple       ``parse``'s (request_id, keep_conn, environ, body) for a whole request
 *                   the worker serves otherwise (FCGI_KEEP_CONN, a body over the limit);
 *     True          served and answered; the caller closes the connection.
 * Server.serve_request(sock, request_id, environ, body, codec) -> None | ok
 *     a whole request on a kept-alive connection whose ``codec`` adopted it: None when the
 *     body is over the limit (the Python path answers), else served; ``codec.end_request``
 *     gives its ending (and whether the connection stays open), and ok is False when the
 *     connection is no longer usable.
 *
 * ``start_response`` and ``write()`` are done here; a header block the C ``header_block``
 * does not take goes to ``reference_head`` (which raises the errors). The Python responder,
 * made by ``handoff`` with the state so far (the header block, the declared length, what was
 * sent, whether the request ended, the kept connection's codec), goes on with
 * ``run(None, result, error)`` from the point where this module stops: every exception
 * (from the app, its iterator, or a failed send, raised as ``client_gone``), a
 * ``wsgi.file_wrapper`` result (sendfile), a list holding other than bytes; it then closes
 * the result. ``note(what, environ, exc)`` logs the two events that end nothing: a close()
 * that raised, a body beyond its Content-Length.
 */
#include "_serve_call.h"

/* -- hand-off to the Python responder -------------------------------------------------- */

static int close_result(Call *c, PyObject *result);

/* The pending exception, taken (cleared) and normalized, its traceback attached: a new
 * reference to pass to Python as an object. */
static PyObject *
take_error(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* The Python responder goes on from here: ``run(None, result, error)`` with the pending
 * exception if any (taken). Returns its result; NULL if it raised (a BaseException). */
static PyObject *
resume(Call *c, PyObject *result)
{
    PyObject *error = PyErr_Occurred() ? take_error() : NULL, *py = NULL, *out = NULL;
    PyObject *length = c->length < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(c->length);
    if (length != NULL) {
        py = PyObject_CallFunction(c->server->handoff, "OiOOOiOOLOO", c->sock, c->rid,
                                   c->environ, c->head ? c->head : Py_None, length, c->code,
                                   c->status ? c->status : Py_None,
                                   c->headers_sent ? Py_True : Py_False, c->body_bytes,
                                   c->ended ? Py_True : Py_False,
                                   c->codec ? c->codec : Py_None);
        Py_DECREF(length);
    }
    if (py != NULL) {
        out = PyObject_CallMethodObjArgs(py, str_run, Py_None, result ? result : Py_None,
                                         error ? error : Py_None, NULL);
        Py_DECREF(py);
    } else if (result != NULL) { /* no responder (MemoryError?): still close the result */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (close_result(c, result) < 0) {
            PyErr_Clear();
        }
        PyErr_Restore(type, value, tb);
    }
    Py_XDECREF(error);
    return out;
}

/* -- the response ----------------------------------------------------------------------- */

/* ``result.close()`` if it has one; a failure is logged (note), never raised. 0 or -1. */
static int
close_result(Call *c, PyObject *result)
{
    PyObject *close = PyObject_GetAttr(result, str_close);
    if (close == NULL) { /* getattr(result, "close", None) */
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    PyObject *out = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    if (out != NULL) {
        Py_DECREF(out);
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyObject *value = take_error();
    out = PyObject_CallFunctionObjArgs(c->server->note, str_close_note, c->environ, value, NULL);
    Py_XDECREF(value);
    Py_XDECREF(out);
    return out == NULL ? -1 : 0;
}

/* A list or tuple of bytes: one write. 1 done, 0 not all bytes (hand off), -1 error. */
static int
respond_sequence(Call *c, PyObject *result)
{
    PyObject *const *items = PySequence_Fast_ITEMS(result);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(result);
    PyObject *small[8], **parts = small;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_CheckExact(items[i])) {
            return 0;
        }
    }
    if (n + 1 > 8) {
        parts = PyMem_Malloc((size_t)(n + 1) * sizeof(PyObject *));
        if (parts == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    Py_ssize_t k = 0;
    if (!c->headers_sent) {
        parts[k++] = c->head;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        parts[k++] = items[i];
        c->body_bytes += PyBytes_GET_SIZE(items[i]);
    }
    int rc = send_parts(c, parts, k, 1);
    if (parts != small) {
        PyMem_Free(parts);
    }
    return rc < 0 ? -1 : 1;
}

/* Any other iterable, chunk by chunk: the response ends with the chunk that completes the
 * declared Content-Length (one write with END_REQUEST, see WSGIResponder.run), or after the
 * last one. 1 done, -1 error (hand off). */
static int
respond_iterable(Call *c, PyObject *result)
{
    PyObject *it = PyObject_GetIter(result);
    if (it == NULL) {
        return -1;
    }
    int done = 0, rc = 0;
    PyObject *item;
    while (rc == 0 && (item = PyIter_Next(it)) != NULL) {
        int truth = PyObject_IsTrue(item); /* the reference skips empty chunks */
        if (truth <= 0) {
            Py_DECREF(item);
            if (truth < 0) {
                rc = -1;
            }
            continue;
        }
        if (done) { /* the reference drops what comes after, whatever it is */
            Py_DECREF(item);
            PyObject *out = PyObject_CallFunctionObjArgs(c->server->note, str_beyond_note,
                                                         c->environ, Py_None, NULL);
            Py_XDECREF(out);
            rc = out == NULL ? -1 : 1;
            continue;
        }
        if (c->head == NULL) {
            Py_DECREF(item);
            PyErr_SetString(PyExc_AssertionError, "write() called before start_response()");
            rc = -1;
            continue;
        }
        PyObject *chunk = as_bytes(item);
        Py_DECREF(item);
        if (chunk == NULL) {
            rc = -1;
            continue;
        }
        done = c->length >= 0 && c->body_bytes + PyBytes_GET_SIZE(chunk) >= c->length;
        rc = emit(c, chunk, done);
        Py_DECREF(chunk);
    }
    Py_DECREF(it);
    if (rc < 0 || PyErr_Occurred()) {
        return -1;
    }
    if (!done) {
        if (c->head == NULL) {
            PyErr_SetString(PyExc_AssertionError,
                            "the application returned without calling start_response()");
            return -1;
        }
        if (emit(c, NULL, 1) < 0) {
            return -1;
        }
    }
    return 1;
}

/* Run the app and answer: Py_True, or NULL (an exception the Python path re-raised). */
static PyObject *
respond(Call *c)
{
    PyObject *args[2] = {c->environ, (PyObject *)c};
    PyObject *result = PyObject_Vectorcall(c->server->app, args, 2, NULL);
    int rc = 0; /* 0: hand off with the result as it is, -1: with the exception */
    if (result == NULL) {
        rc = -1;
    } else if (PyList_CheckExact(result) || PyTuple_CheckExact(result)) {
        rc = c->head == NULL ? 0 : respond_sequence(c, result);
    } else if (!PyObject_TypeCheck(result, (PyTypeObject *)c->server->file_wrapper)) {
        rc = respond_iterable(c, result);
    }
    if (rc <= 0) {
        PyObject *out = resume(c, result);
        Py_XDECREF(result);
        return out;
    }
    rc = close_result(c, result);
    Py_DECREF(result);
    return rc < 0 ? NULL : Py_NewRef(Py_True);
}

/* -- Server ----------------------------------------------------------------------------- */

/* Whether a whole request's body fits the limit (else the Python path answers 413); -1
 * error. */
static int
fits(Server *s, PyObject *environ, PyObject *body)
{
    if (s->max_body < 0) {
        return 1;
    }
    if (PyBytes_GET_SIZE(body) > s->max_body) {
        return 0;
    }
    PyObject *value = PyDict_GetItemWithError(environ, str_content_length);
    if (value == NULL) {
        return PyErr_Occurred() ? -1 : 1;
    }
    if (!PyUnicode_Check(value) || PyUnicode_KIND(value) != PyUnicode_1BYTE_KIND) {
        return 0;
    }
    const Py_UCS1 *d = PyUnicode_1BYTE_DATA(value);
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    long long v = 0;
    if (n > 18) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (d[i] < '0' || d[i] > '9') {
            return 0; /* the Python path says what is wrong with it */
        }
        v = v * 10 + (d[i] - '0');
    }
    return v <= s->max_body;
}

static PyObject *serve_parsed(Server *s, PyObject *sock, int rid, PyObject *environ,
                              PyObject *body, PyObject *codec);

/* An exception escaping ``serve_parsed`` (the app's SystemExit, a failure here) closes
 * the connection: the caller never saw it as one of its own. NULL. */
static PyObject *
closing(PyObject *sock)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *closed = PyObject_CallMethod(sock, "close", NULL);
    Py_XDECREF(closed);
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
    return NULL;
}

/* Whether a call of a Server method may go on: __init__ ran, and the arguments are
 * ``well_formed`` (else TypeError ``usage``, and the socket, when given, closed). */
static int
may_serve(Server *s, PyObject *const *args, Py_ssize_t nargs, int well_formed, const char *usage)
{
    if (s->app == NULL) {
        PyErr_SetString(PyExc_TypeError, "Server.__init__() was not called");
        return 0;
    }
    if (!well_formed) {
        PyErr_SetString(PyExc_TypeError, usage);
        if (nargs > 0) {
            closing(args[0]);
        }
        return 0;
    }
    return 1;
}

/* Server.serve(sock, data): parse, and serve a whole request without FCGI_KEEP_CONN. */
static PyObject *
server_serve(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Server *s = (Server *)self;
    if (!may_serve(s, args, nargs, nargs == 2 && PyBytes_CheckExact(args[1]),
                   "serve(sock, data: bytes)")) {
        return NULL;
    }
    PyObject *pargs[5] = {args[1], s->base, s->root_path, s->max_params_bytes, s->max_params_count};
    PyObject *got = PyObject_Vectorcall(s->parse, pargs, 5, NULL);
    if (got == NULL) {
        return closing(args[0]);
    }
    if (got == Py_None) {
        return got;
    }
    PyObject *environ = PyTuple_GET_ITEM(got, 2), *body = PyTuple_GET_ITEM(got, 3);
    /* FCGI_KEEP_CONN: the connection outlives the request, the worker serves it (its
     * codec, through serve_request) */
    int mine = PyTuple_GET_ITEM(got, 1) == Py_False ? fits(s, environ, body) : 0;
    if (mine <= 0) {
        if (mine < 0) {
            Py_DECREF(got);
            return closing(args[0]);
        }
        return got;
    }
    int rid = (int)PyLong_AsLong(PyTuple_GET_ITEM(got, 0));
    PyObject *out = serve_parsed(s, args[0], rid, environ, body, NULL);
    Py_DECREF(got);
    if (out != NULL && out != Py_True) { /* the Python responder's ok: served either way */
        Py_SETREF(out, Py_NewRef(Py_True));
    }
    return out == NULL ? closing(args[0]) : out;
}

/* Server.serve_request(sock, request_id, environ, body, codec): a whole request on a
 * kept-alive connection, which ``codec`` has adopted and ends. */
static PyObject *
server_serve_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Server *s = (Server *)self;
    if (!may_serve(s, args, nargs,
                   nargs == 5 && PyLong_CheckExact(args[1]) && PyDict_CheckExact(args[2]) &&
                       PyBytes_CheckExact(args[3]),
                   "serve_request(sock, request_id: int, environ: dict, body: bytes, codec)")) {
        return NULL;
    }
    long rid = PyLong_AsLong(args[1]);
    if (rid < 1 || rid > 65535) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "request_id must be 1 to 65535");
        }
        return closing(args[0]);
    }
    int mine = fits(s, args[2], args[3]);
    if (mine <= 0) {
        return mine < 0 ? closing(args[0]) : Py_NewRef(Py_None);
    }
    PyObject *out = serve_parsed(s, args[0], (int)rid, args[2], args[3], args[4]);
    return out == NULL ? closing(args[0]) : out;
}

/* The app's answer to a parsed whole request, written to ``sock``: Py_True, or the Python
 * responder's ok (Py_True/Py_False) when it took over; NULL with an exception. */
static PyObject *
serve_parsed(Server *s, PyObject *sock, int rid, PyObject *environ, PyObject *body,
             PyObject *codec)
{
    int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0) {
        return NULL;
    }
    PyObject *input = PyObject_CallOneArg(s->make_input, body);
    if (input == NULL || PyDict_SetItem(environ, str_wsgi_input, input) < 0 ||
        PyDict_SetItem(environ, str_wsgi_errors, s->errors) < 0) {
        Py_XDECREF(input);
        return NULL;
    }
    Py_DECREF(input);
    Call *c = PyObject_GC_New(Call, &CallType);
    if (c == NULL) {
        return NULL;
    }
    c->server = (Server *)Py_NewRef((PyObject *)s);
    c->sock = Py_NewRef(sock);
    c->environ = Py_NewRef(environ);
    c->codec = Py_XNewRef(codec);
    c->head = c->status = NULL;
    c->length = -1;
    c->body_bytes = 0;
    c->code = c->headers_sent = c->ended = 0;
    c->fd = fd;
    c->rid = rid;
    PyObject_GC_Track(c);
    PyObject *out = NULL;
    PyObject *ctx = PyContext_Copy(s->baseline);
    if (ctx != NULL && PyContext_Enter(ctx) == 0) {
        out = respond(c);
        if (PyContext_Exit(ctx) < 0) {
            Py_CLEAR(out);
        }
    }
    Py_XDECREF(ctx);
    c->fd = -1; /* a start_response the app kept can no longer write */
    Py_DECREF(c);
    return out;
}

#define SERVER_ARGS 16

/* A Server's object fields, in the order of Server()'s arguments (NULL for
 * max_body_bytes, kept as a number): what __init__ sets and dealloc clears. */
static void
server_fields(Server *s, PyObject **f[SERVER_ARGS])
{
    PyObject **all[SERVER_ARGS] = {
        &s->app, &s->baseline, &s->base, &s->root_path, &s->max_params_bytes,
        &s->max_params_count, NULL, &s->errors, &s->parse, &s->header_block,
        &s->reference_head, &s->make_input, &s->handoff, &s->note, &s->file_wrapper,
        &s->client_gone};
    memcpy(f, all, sizeof(all));
}

static int
server_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    Server *s = (Server *)self;
    static char *kwlist[] = {"app", "baseline", "base", "root_path", "max_params_bytes",
                             "max_params_count", "max_body_bytes", "errors", "parse",
                             "header_block", "reference_head", "make_input", "handoff", "note",
                             "file_wrapper", "client_gone", NULL};
    PyObject *o[SERVER_ARGS];
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "OO!O!UO!O!OOOOOOOOO!O!:Server", kwlist, &o[0], &PyContext_Type,
            &o[1], &PyDict_Type, &o[2], &o[3], &PyLong_Type, &o[4], &PyLong_Type, &o[5], &o[6],
            &o[7], &o[8], &o[9], &o[10], &o[11], &o[12], &o[13], &PyType_Type, &o[14],
            &PyType_Type, &o[15])) {
        return -1;
    }
    s->max_body = o[6] == Py_None ? -1 : PyLong_AsLongLong(o[6]);
    if (s->max_body == -1 && PyErr_Occurred()) {
        return -1;
    }
    PyObject **fields[SERVER_ARGS];
    server_fields(s, fields);
    for (int i = 0; i < SERVER_ARGS; i++) {
        if (fields[i] != NULL) {
            Py_XSETREF(*fields[i], Py_NewRef(o[i]));
        }
    }
    return 0;
}

static void
server_dealloc(PyObject *self)
{
    PyObject **fields[SERVER_ARGS];
    server_fields((Server *)self, fields);
    for (int i = 0; i < SERVER_ARGS; i++) {
        if (fields[i] != NULL) {
            Py_CLEAR(*fields[i]);
        }
    }
    Py_TYPE(self)->tp_free(self);
}

static PyMethodDef server_methods[] = {
    {"serve", (PyCFunction)(void (*)(void))server_serve, METH_FASTCALL,
     "serve(sock, data) -> None | (request_id, keep_conn, environ, body) | True"},
    {"serve_request", (PyCFunction)(void (*)(void))server_serve_request, METH_FASTCALL,
     "serve_request(sock, request_id, environ, body, codec) -> None | ok"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ServerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway.workers._serve.Server",
    .tp_basicsize = sizeof(Server),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The sync worker's C serve path for one configuration (see the module doc).",
    .tp_new = PyType_GenericNew,
    .tp_init = server_init,
    .tp_dealloc = server_dealloc,
    .tp_methods = server_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_serve", "The sync worker's C serve path (optional speedup).", 0,
};

PyMODINIT_FUNC
PyInit__serve(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&str_write, "write"}, {&str_run, "run"},
        {&str_close, "close"}, {&str_close_note, "close"}, {&str_beyond_note, "beyond"},
        {&str_wsgi_input, "wsgi.input"}, {&str_wsgi_errors, "wsgi.errors"},
        {&str_content_length, "CONTENT_LENGTH"}, {&str_end_request, "end_request"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&CallType) < 0 || PyType_Ready(&ServerType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Server", (PyObject *)&ServerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
