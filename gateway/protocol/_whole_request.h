/* Shared by the workers' C fast paths (gateway/wsgi/_fastpath.c, gateway/asgi/_fastpath.c):
 * recognising a buffer that holds exactly one whole simple RESPONDER request.
 *
 * That is what nginx sends in one write on a connection without fastcgi_keep_conn (and for
 * each request on a kept-alive one): BEGIN_REQUEST, the PARAMS records, the empty PARAMS,
 * the STDIN records and the empty STDIN, all for one request id, nothing else. Anything
 * else (another role or version, management records, a stream split in more than
 * MAX_SEGMENTS records, a truncated or extra record, params over the limit) is "not
 * simple": the caller then feeds the bytes to the codec (gateway/protocol/connection.py),
 * the reference, which raises every error. No I/O, no state.
 */
#ifndef GATEWAY_WHOLE_REQUEST_H
#define GATEWAY_WHOLE_REQUEST_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_SEGMENTS 16

typedef struct {
    const unsigned char *ptr;
    Py_ssize_t len;
} segment;

typedef struct {
    int rid;
    int keep;
    segment params[MAX_SEGMENTS], body[MAX_SEGMENTS];
    int nparams, nbody;
    Py_ssize_t params_size, body_size;
} whole_request;

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

/* 1 when p[0:end] is exactly one whole simple RESPONDER request with params of at most
 * ``max_bytes`` (*r filled; its segments point into p), else 0. */
static int
parse_whole(const unsigned char *p, Py_ssize_t end, Py_ssize_t max_bytes, whole_request *r)
{
    /* BEGIN_REQUEST: role RESPONDER, a non-zero id, an 8-byte body */
    if (end < 16 || p[0] != 1 || p[1] != 1 || p[4] != 0 || p[5] != 8) {
        return 0;
    }
    r->rid = (p[2] << 8) | p[3];
    Py_ssize_t pos = 16 + p[6];
    if (r->rid == 0 || pos > end || p[8] != 0 || p[9] != 1) {
        return 0;
    }
    r->keep = p[10] & 1;
    return read_stream(p, end, &pos, 4, r->rid, r->params, &r->nparams, &r->params_size) &&
           r->params_size <= max_bytes &&
           read_stream(p, end, &pos, 5, r->rid, r->body, &r->nbody, &r->body_size) && pos == end;
}

/* The params stream's content as one buffer: the record itself when there is one, else a
 * copy the caller frees (*owned); NULL with an exception set on failure. */
static const unsigned char *
params_block(whole_request *r, unsigned char **owned)
{
    *owned = NULL;
    if (r->nparams == 1) {
        return r->params[0].ptr;
    }
    if (r->nparams == 0) {
        return (const unsigned char *)"";
    }
    unsigned char *buf = PyMem_Malloc((size_t)r->params_size);
    if (buf == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t off = 0;
    for (int i = 0; i < r->nparams; i++) {
        memcpy(buf + off, r->params[i].ptr, (size_t)r->params[i].len);
        off += r->params[i].len;
    }
    *owned = buf;
    return buf;
}

/* request()'s common part: ``data`` (bytes) taken as one whole simple request within the
 * limits (Python ints). 1: *r, *max_count and the params block are set (free *owned after
 * use); 0: not simple; -1: error. */
static int
take_whole(PyObject *data, PyObject *max_bytes_obj, PyObject *max_count_obj, whole_request *r,
           Py_ssize_t *max_count, const unsigned char **block, unsigned char **owned)
{
    Py_ssize_t max_bytes = PyLong_AsSsize_t(max_bytes_obj);
    *max_count = PyLong_AsSsize_t(max_count_obj);
    if ((max_bytes == -1 || *max_count == -1) && PyErr_Occurred()) {
        return -1;
    }
    if (!parse_whole((const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                     max_bytes, r)) {
        return 0;
    }
    *block = params_block(r, owned);
    return *block == NULL ? -1 : 1;
}

/* The STDIN stream's content as a new bytes object. */
static PyObject *
body_bytes(whole_request *r)
{
    if (r->nbody == 1) {
        return PyBytes_FromStringAndSize((const char *)r->body[0].ptr, r->body[0].len);
    }
    PyObject *data = PyBytes_FromStringAndSize(NULL, r->body_size);
    if (data != NULL) {
        char *out = PyBytes_AS_STRING(data);
        for (int i = 0; i < r->nbody; i++) {
            memcpy(out, r->body[i].ptr, (size_t)r->body[i].len);
            out += r->body[i].len;
        }
    }
    return data;
}

/* (request_id, keep_conn, environ_or_params, body), stealing the reference to ``items``. */
static PyObject *
whole_result(whole_request *r, PyObject *items)
{
    PyObject *data = body_bytes(r);
    if (data == NULL) {
        Py_DECREF(items);
        return NULL;
    }
    return Py_BuildValue("(iNNN)", r->rid, PyBool_FromLong(r->keep), items, data);
}

#endif
