/* The pieces of gateway/protocol/_pairs.c that are about single items: reading a pair
 * length, and the per-position item cache kept in the module's state. No I/O; every
 * caller holds the GIL (the module declares Py_MOD_GIL_USED where that slot exists).
 */
#ifndef GATEWAY_PAIRS_ITEMS_H
#define GATEWAY_PAIRS_ITEMS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Read a 1- or 4-byte FastCGI length at *pos; -1 when the body ends inside it. */
static Py_ssize_t
read_length(const unsigned char *p, Py_ssize_t end, Py_ssize_t *pos)
{
    Py_ssize_t i = *pos;
    if (i >= end) {
        return -1;
    }
    if (!(p[i] & 0x80)) {
        *pos = i + 1;
        return p[i];
    }
    if (end - i < 4) {
        return -1;
    }
    *pos = i + 4;
    return ((Py_ssize_t)(p[i] & 0x7f) << 24) | ((Py_ssize_t)p[i + 1] << 16) |
           ((Py_ssize_t)p[i + 2] << 8) | (Py_ssize_t)p[i + 3];
}

/* The items returned for the previous body, by position (names and values; one row for
 * bytes, one for latin-1 str). nginx sends the same names in the same order, and most
 * values repeat (DOCUMENT_ROOT, SERVER_SOFTWARE, HTTP_HOST...): an item equal to the one
 * at its position last time is that same object again, so no allocation, and a name's
 * hash is already computed when the environ or scope dict is filled. Items are immutable,
 * so handing one out twice is safe. This is the module's state (one per module object,
 * so per interpreter); only short items at the first positions are kept, which bounds
 * what the cache holds on to. Cached names (str) are interned: see make_item. */
#define CACHED_ITEMS 128
#define CACHED_SIZE 256

#define CACHED_PAIRS (CACHED_ITEMS / 2)

typedef struct {
    PyObject *items[2][CACHED_ITEMS];
    /* the (name, value) tuples returned last time, by position: a pair whose name and
     * value are the cached items again is that same tuple again */
    PyObject *pairs[2][CACHED_PAIRS];
} pairs_cache;

static PyObject *
new_item(const unsigned char *start, Py_ssize_t size, int text)
{
    if (text) {
        return PyUnicode_DecodeLatin1((const char *)start, size, NULL);
    }
    return PyBytes_FromStringAndSize((const char *)start, size);
}

static PyObject *
make_item(pairs_cache *cache, const unsigned char *start, Py_ssize_t size, int text,
          Py_ssize_t slot)
{
    if (slot >= CACHED_ITEMS || size > CACHED_SIZE) {
        return new_item(start, size, text);
    }
    PyObject **cell = &cache->items[text][slot];
    PyObject *old = *cell;
    if (old != NULL) {
        /* latin-1 str of 1-byte kind (any latin-1 text is) or bytes: compare the bytes */
        const void *data = text ? PyUnicode_DATA(old) : (const void *)PyBytes_AS_STRING(old);
        Py_ssize_t len = text ? PyUnicode_GET_LENGTH(old) : PyBytes_GET_SIZE(old);
        if (len == size && memcmp(data, start, (size_t)size) == 0) {
            return Py_NewRef(old);
        }
    }
    PyObject *item = new_item(start, size, text);
    if (item != NULL && text && !(slot & 1)) {
        /* A name (even slot): interned, so that it is the very object of the literals that
         * look it up (``environ["PATH_INFO"]``): a dict lookup then matches it by identity
         * instead of comparing the characters. Interned strings stay mortal. */
        PyUnicode_InternInPlace(&item);
    }
    if (item != NULL) {
        *cell = Py_NewRef(item);
        Py_XDECREF(old);
    }
    return item;
}

/* The tuple (name, value) at pair position ``index``; steals both references. The
 * previous body's tuple at that position when it holds these very objects (both came
 * from the item cache), else a new tuple, remembered for next time. */
static PyObject *
make_pair(pairs_cache *cache, int text, Py_ssize_t index, PyObject *name, PyObject *value)
{
    PyObject **cell = index < CACHED_PAIRS ? &cache->pairs[text][index] : NULL;
    if (cell != NULL && *cell != NULL && PyTuple_GET_ITEM(*cell, 0) == name &&
        PyTuple_GET_ITEM(*cell, 1) == value) {
        Py_DECREF(name);
        Py_DECREF(value);
        return Py_NewRef(*cell);
    }
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(name);
        Py_DECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, name);
    PyTuple_SET_ITEM(pair, 1, value);
    if (cell != NULL) {
        Py_XSETREF(*cell, Py_NewRef(pair));
    }
    return pair;
}

#endif
