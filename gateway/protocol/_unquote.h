/* Percent-decoding of a URI path's bytes, shared by the two C fast paths: the sync worker's
 * environ (gateway/wsgi/_environ_fixups.h, as environ.wsgi_path) and the async worker's
 * scope (gateway/asgi/_fastpath.c, as scope.decode_path). Both follow
 * urllib.parse.unquote_to_bytes: each %XX with two hex digits becomes its byte, any other
 * % stays. No I/O, no state.
 */
#ifndef GATEWAY_UNQUOTE_H
#define GATEWAY_UNQUOTE_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int
hex_digit(unsigned char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* ``c[0:n]`` percent-decoded into ``out`` (room for ``n`` bytes); the decoded length. */
static Py_ssize_t
unquote_run(const unsigned char *c, Py_ssize_t n, char *out)
{
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int hi, lo;
        if (c[i] == '%' && i + 2 < n && (hi = hex_digit(c[i + 1])) >= 0 &&
            (lo = hex_digit(c[i + 2])) >= 0) {
            out[j++] = (char)(hi << 4 | lo);
            i += 2;
        }
        else {
            out[j++] = (char)c[i];
        }
    }
    return j;
}

#endif
