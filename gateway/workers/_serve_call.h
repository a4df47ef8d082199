/* One request of gateway/workers/_serve.c: the server's and the request's state, the
 * ``start_response`` callable the app gets (a GC-tracked object, so that an app keeping it
 * in a cycle does not leak) with its ``write()``, and ``emit``, which sends body bytes
 * after the header block. As WSGIResponder.start_response and .write do (the reference).
 */
#ifndef GATEWAY_SERVE_CALL_H
#define GATEWAY_SERVE_CALL_H

#include "_serve_send.h"

typedef struct {
    PyObject_HEAD
    PyObject *app, *baseline, *base, *root_path, *max_params_bytes, *max_params_count;
    PyObject *errors, *parse, *header_block, *reference_head, *make_input, *handoff, *note;
    PyObject *file_wrapper, *client_gone;
    long long max_body; /* -1: no limit */
} Server;

/* One request: the ``start_response`` callable the app gets, and the response's state. */
typedef struct {
    PyObject_HEAD
    Server *server;
    PyObject *sock, *environ;
    PyObject *codec;  /* a kept-alive connection's codec, which ends the request; or NULL */
    PyObject *head;   /* the header block (bytes), once start_response was called */
    PyObject *status; /* its status (str) */
    long long length; /* the declared Content-Length, -1: none */
    long long body_bytes;
    int code, headers_sent, ended, fd, rid;
} Call;

static PyObject *str_write, *str_run, *str_close, *str_close_note, *str_beyond_note,
    *str_wsgi_input, *str_wsgi_errors, *str_content_length, *str_end_request;

/* ``parts`` (bytes, the header block first if not yet sent) as the request's STDOUT, and
 * its ending if ``end``: on a kept-alive connection the codec's ``end_request`` (which
 * also decides whether the connection stays open, and marks it), else the usual one.
 * As WSGIResponder._finish: the headers count as sent and the request as ended before the
 * codec is asked (it runs Python: another thread of the app calling start_response then
 * gets the reference's error, and a failure in it is handed off as an ended request).
 * -1 with an exception set. */
static int
send_parts(Call *c, PyObject *const *parts, Py_ssize_t n, int end)
{
    /* held until written, the GIL released: another thread of the app could change them */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_INCREF(parts[i]);
    }
    c->headers_sent = 1;
    c->ended = end;
    PyObject *ending = NULL;
    int rc = -1;
    if (end && c->codec != NULL) {
        PyObject *rid = PyLong_FromLong(c->rid);
        ending = rid == NULL ? NULL : PyObject_CallMethodOneArg(c->codec, str_end_request, rid);
        Py_XDECREF(rid);
        if (ending != NULL && !PyBytes_CheckExact(ending)) {
            Py_CLEAR(ending);
            PyErr_SetString(PyExc_TypeError, "end_request() did not return bytes");
        }
        if (ending == NULL) {
            goto done;
        }
    }
    rc = send_stdout(c->fd, c->sock, c->rid, c->server->client_gone, parts, n, end, ending);
done:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(parts[i]);
    }
    Py_XDECREF(ending);
    return rc;
}

/* ``chunk`` (bytes, may be NULL) after the header block if not yet sent; ends the request
 * if ``end``. Counts the body bytes. -1 with an exception set. */
static int
emit(Call *c, PyObject *chunk, int end)
{
    PyObject *parts[2] = {NULL, NULL};
    Py_ssize_t n = 0;
    if (!c->headers_sent) {
        parts[n++] = c->head;
    }
    if (chunk != NULL) {
        parts[n++] = chunk;
        c->body_bytes += PyBytes_GET_SIZE(chunk);
    }
    return send_parts(c, parts, n, end);
}

/* -- start_response and write ---------------------------------------------------------- */

static PyObject *
call_start_response(PyObject *self, PyObject *args, PyObject *kwargs)
{
    Call *c = (Call *)self;
    static char *kwlist[] = {"status", "headers", "exc_info", NULL};
    PyObject *status, *headers, *exc_info = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:start_response", kwlist, &status,
                                     &headers, &exc_info)) {
        return NULL;
    }
    if (exc_info != Py_None) {
        if (c->headers_sent) { /* raise exc_info[1].with_traceback(exc_info[2]) */
            if (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) != 3 ||
                !PyExceptionInstance_Check(PyTuple_GET_ITEM(exc_info, 1))) {
                PyErr_SetString(PyExc_TypeError, "exc_info must be a (type, value, traceback) tuple");
                return NULL;
            }
            PyObject *value = PyTuple_GET_ITEM(exc_info, 1), *tb = PyTuple_GET_ITEM(exc_info, 2);
            if (tb != Py_None && PyException_SetTraceback(value, tb) < 0) {
                return NULL;
            }
            PyErr_SetObject((PyObject *)Py_TYPE(value), value);
            return NULL;
        }
    } else if (c->status != NULL) {
        PyErr_SetString(PyExc_AssertionError, "start_response() called twice without exc_info");
        return NULL;
    }
    PyObject *head = PyObject_CallFunctionObjArgs(c->server->header_block, status, headers, NULL);
    if (head == Py_None) { /* not a simple one: the reference (which raises the errors) */
        Py_DECREF(head);
        head = PyObject_CallFunctionObjArgs(c->server->reference_head, status, headers, NULL);
    }
    if (head == NULL) {
        return NULL;
    }
    PyObject *length = PyTuple_GET_ITEM(head, 1);
    long long declared = -1;
    if (length != Py_None) {
        int overflow;
        declared = PyLong_AsLongLongAndOverflow(length, &overflow);
        if (overflow) {
            declared = LLONG_MAX; /* never reached */
        }
    }
    Py_XSETREF(c->head, Py_NewRef(PyTuple_GET_ITEM(head, 0)));
    c->code = (int)PyLong_AsLong(PyTuple_GET_ITEM(head, 2));
    Py_DECREF(head);
    c->length = declared;
    Py_XSETREF(c->status, Py_NewRef(status));
    return PyObject_GetAttr(self, str_write);
}

/* The WSGI ``write()`` callable: sent at once, as the reference does. */
static PyObject *
call_write(PyObject *self, PyObject *data)
{
    Call *c = (Call *)self;
    if (c->head == NULL) {
        PyErr_SetString(PyExc_AssertionError, "write() called before start_response()");
        return NULL;
    }
    if (c->ended) {
        PyErr_SetString(PyExc_AssertionError, "write() called after the response ended");
        return NULL;
    }
    PyObject *chunk = as_bytes(data);
    if (chunk == NULL) {
        return NULL;
    }
    int rc = 0;
    if (!c->headers_sent || PyBytes_GET_SIZE(chunk) > 0) {
        rc = emit(c, chunk, 0);
    }
    Py_DECREF(chunk);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
call_traverse(PyObject *self, visitproc visit, void *arg)
{
    Call *c = (Call *)self;
    Py_VISIT(c->sock);
    Py_VISIT(c->environ);
    Py_VISIT(c->codec);
    Py_VISIT(c->head);
    Py_VISIT(c->status);
    return 0;
}

static int
call_clear(PyObject *self)
{
    Call *c = (Call *)self;
    Py_CLEAR(c->sock);
    Py_CLEAR(c->environ);
    Py_CLEAR(c->codec);
    Py_CLEAR(c->head);
    Py_CLEAR(c->status);
    return 0;
}

static void
call_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    call_clear(self);
    Py_CLEAR(((Call *)self)->server);
    PyObject_GC_Del(self);
}

static PyMethodDef call_methods[] = {
    {"write", (PyCFunction)call_write, METH_O, "WSGI write(data)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CallType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway.workers._serve.StartResponse",
    .tp_basicsize = sizeof(Call),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "start_response(status, headers, exc_info=None) of one request",
    .tp_call = call_start_response,
    .tp_traverse = call_traverse,
    .tp_clear = call_clear,
    .tp_dealloc = call_dealloc,
    .tp_methods = call_methods,
};

#endif
