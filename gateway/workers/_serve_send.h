/* Writing a response's FastCGI records for gateway/workers/_serve.c: STDOUT records framed
 * over a list of bytes parts as the codec frames their concatenation (encode_stream,
 * stream_parts: records of up to 65535 bytes, no padding), the request's ending, and one
 * vectored write with the GIL released (waiting for writability, as ``sendall`` does, on a
 * socket with a timeout). Also ``as_bytes`` for the body data an app gives.
 */
#ifndef GATEWAY_SERVE_SEND_H
#define GATEWAY_SERVE_SEND_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/uio.h>

#define MAX_CONTENT 65535
#define IOV_BATCH 1024

/* ``data`` as bytes (a new reference): bytes as they are, another buffer copied; NULL with
 * TypeError for anything else (the reference's ``head + data`` raises TypeError too). */
static PyObject *
as_bytes(PyObject *data)
{
    if (PyBytes_CheckExact(data)) {
        return Py_NewRef(data);
    }
    if (PyObject_CheckBuffer(data)) {
        return PyBytes_FromObject(data);
    }
    PyErr_Format(PyExc_TypeError, "response body data must be bytes, not %.100s",
                 Py_TYPE(data)->tp_name);
    return NULL;
}

static void
record_header(unsigned char *h, int type, int rid, Py_ssize_t n)
{
    h[0] = 1;
    h[1] = (unsigned char)type;
    h[2] = (unsigned char)(rid >> 8);
    h[3] = (unsigned char)rid;
    h[4] = (unsigned char)(n >> 8);
    h[5] = (unsigned char)n;
    h[6] = h[7] = 0;
}

/* Wait until ``fd`` takes more, as ``sock.sendall`` does on a socket with a timeout
 * (``socket.setdefaulttimeout()`` gives one to every new socket, and makes its fd
 * non-blocking). 0: writable; -1 with ``client_gone`` raised: a blocking socket whose
 * kernel send timeout (SO_SNDTIMEO) expired, or the socket's own timeout did. */
static int
wait_writable(int fd, PyObject *sock, PyObject *client_gone, int err)
{
    PyObject *t = PyObject_CallMethod(sock, "gettimeout", NULL);
    if (t == NULL) {
        return -1;
    }
    double timeout = t == Py_None ? -1.0 : PyFloat_AsDouble(t);
    Py_DECREF(t);
    if (timeout < 0) {
        if (PyErr_Occurred()) {
            return -1;
        }
        PyErr_Format(client_gone, "[Errno %d] %s", err, strerror(err));
        return -1;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int ready;
    Py_BEGIN_ALLOW_THREADS
    ready = poll(&pfd, 1, (int)(timeout * 1000));
    Py_END_ALLOW_THREADS
    if (ready > 0 || (ready < 0 && errno == EINTR)) {
        return PyErr_CheckSignals();
    }
    PyErr_SetString(client_gone, ready == 0 ? "timed out" : strerror(errno));
    return -1;
}

/* writev all of ``iov`` (modified) to ``fd`` (``sock``'s), the GIL released; -1 with
 * ``client_gone`` raised (or the exception of a signal handler). */
static int
write_all(int fd, PyObject *sock, PyObject *client_gone, struct iovec *iov, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        ssize_t sent;
        int batch = n - i > IOV_BATCH ? IOV_BATCH : (int)(n - i);
        Py_BEGIN_ALLOW_THREADS
        sent = writev(fd, iov + i, batch);
        Py_END_ALLOW_THREADS
        if (sent < 0) {
            int err = errno;
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    return -1;
                }
                continue;
            }
            if (err == EAGAIN || err == EWOULDBLOCK) {
                if (wait_writable(fd, sock, client_gone, err) < 0) {
                    return -1;
                }
                continue;
            }
            /* the text of the reference's ClientGone(str(OSError)) */
            PyErr_Format(client_gone, "[Errno %d] %s", err, strerror(err));
            return -1;
        }
        while (i < n && (size_t)sent >= iov[i].iov_len) {
            sent -= (ssize_t)iov[i].iov_len;
            i++;
        }
        if (sent > 0) {
            iov[i].iov_base = (char *)iov[i].iov_base + sent;
            iov[i].iov_len -= (size_t)sent;
        }
    }
    return 0;
}

/* The concatenation of ``parts`` (bytes objects) as STDOUT records of up to 65535 bytes
 * spanning the parts (as the codec's encode_stream/stream_parts frame it), then, if
 * ``end``, the request's ending: ``ending`` (bytes) when given, else the empty STDOUT and
 * END_REQUEST(0, REQUEST_COMPLETE); in one vectored write. -1 with an exception set. */
static int
send_stdout(int fd, PyObject *sock, int rid, PyObject *client_gone, PyObject *const *parts,
            Py_ssize_t nparts, int end, PyObject *ending)
{
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < nparts; i++) {
        total += PyBytes_GET_SIZE(parts[i]);
    }
    Py_ssize_t records = (total + MAX_CONTENT - 1) / MAX_CONTENT;
    /* each record: its header + at most one piece per part it spans */
    Py_ssize_t max_iov = records + nparts + records + 1;
    unsigned char small_headers[8 * 4], tail[24];
    struct iovec small_iov[16];
    unsigned char *headers = small_headers;
    struct iovec *iov = small_iov;
    if (records > 4 || max_iov > 16) {
        headers = PyMem_Malloc((size_t)(records ? records : 1) * 8);
        iov = PyMem_Malloc((size_t)max_iov * sizeof(struct iovec));
        if (headers == NULL || iov == NULL) {
            if (headers != small_headers) {
                PyMem_Free(headers);
            }
            if (iov != small_iov) {
                PyMem_Free(iov);
            }
            PyErr_NoMemory();
            return -1;
        }
    }
    Py_ssize_t k = 0, part = 0, off = 0, left = total;
    for (Py_ssize_t r = 0; r < records; r++) {
        Py_ssize_t n = left < MAX_CONTENT ? left : MAX_CONTENT;
        record_header(headers + 8 * r, 6, rid, n);
        iov[k].iov_base = headers + 8 * r;
        iov[k++].iov_len = 8;
        left -= n;
        while (n > 0) {
            Py_ssize_t avail = PyBytes_GET_SIZE(parts[part]) - off;
            if (avail == 0) {
                part++;
                off = 0;
                continue;
            }
            Py_ssize_t take = avail < n ? avail : n;
            iov[k].iov_base = PyBytes_AS_STRING(parts[part]) + off;
            iov[k++].iov_len = (size_t)take;
            off += take;
            n -= take;
        }
    }
    if (end && ending != NULL) {
        iov[k].iov_base = PyBytes_AS_STRING(ending);
        iov[k++].iov_len = (size_t)PyBytes_GET_SIZE(ending);
    } else if (end) {
        record_header(tail, 6, rid, 0);
        record_header(tail + 8, 3, rid, 8);
        memset(tail + 16, 0, 8); /* appStatus 0, REQUEST_COMPLETE, reserved */
        iov[k].iov_base = tail;
        iov[k++].iov_len = 24;
    }
    int rc = write_all(fd, sock, client_gone, iov, k);
    if (headers != small_headers) {
        PyMem_Free(headers);
    }
    if (iov != small_iov) {
        PyMem_Free(iov);
    }
    return rc;
}

#endif
