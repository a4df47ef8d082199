/* Optional C speedup for the FastCGI codec: decoding a name-value pairs body.
 *
 * Why C here: every request's PARAMS body (about 20 pairs from nginx) is decoded on the
 * hot path, and the pure-Python loop pays for interpreter dispatch, two length reads and
 * two slices per pair; this scans the body once and hands back the previous body's
 * objects for items that repeat (_pairs_items.h). records.decode_pairs in Python stays the
 * reference implementation: it is used when this module is not built or speedups are
 * switched off (FCGI_GATEWAY_NO_SPEEDUPS, gateway/speedups.py), and it produces the error
 * for any body this one rejects (ValueError here means "not a well-formed body", nothing
 * more), so both give the same RemoteProtocolError. tests/protocol/test_pairs_speedup.py
 * and test_pairs_fuzz.py check they agree; CI runs the fuzz test on an ASan/UBSan build.
 *
 * decode(data: bytes, text: bool) -> list[tuple[bytes, bytes]] | list[tuple[str, str]]
 *   text: names and values decoded as latin-1 str (the CGI/WSGI native strings).
 * No I/O. The item cache is the module's only state (multi-phase init, m_size set, so each
 * module object, one per interpreter, has its own); the GIL guards it.
 */
#include "_pairs_items.h"

static PyObject *
decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode(data, text) takes 2 arguments");
        return NULL;
    }
    PyObject *data = args[0];
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "decode() needs bytes");
        return NULL;
    }
    int text = PyObject_IsTrue(args[1]);
    if (text < 0) {
        return NULL;
    }
    pairs_cache *cache = PyModule_GetState(module);
    if (cache == NULL) {
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data);
    Py_ssize_t pos = 0;
    PyObject *pairs = PyList_New(0);
    if (pairs == NULL) {
        return NULL;
    }
    while (pos < end) {
        Py_ssize_t n = read_length(p, end, &pos);
        if (n < 0) {
            goto malformed;
        }
        Py_ssize_t v = read_length(p, end, &pos);
        if (v < 0 || n > end - pos || v > end - pos - n) {
            goto malformed;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            goto error;
        }
        Py_ssize_t slot = 2 * PyList_GET_SIZE(pairs);
        PyObject *name = make_item(cache, p + pos, n, text, slot);
        if (name == NULL) {
            Py_DECREF(pair);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyObject *value = make_item(cache, p + pos + n, v, text, slot + 1);
        if (value == NULL) {
            Py_DECREF(pair);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 1, value);
        int failed = PyList_Append(pairs, pair);
        Py_DECREF(pair);
        if (failed) {
            goto error;
        }
        pos += n + v;
    }
    return pairs;

malformed:
    PyErr_SetString(PyExc_ValueError, "malformed name-value pairs body");
error:
    Py_DECREF(pairs);
    return NULL;
}

/* -- module state: the item cache ------------------------------------------------------ */

static int
pairs_traverse(PyObject *module, visitproc visit, void *arg)
{
    pairs_cache *cache = PyModule_GetState(module);
    if (cache != NULL) {
        for (int row = 0; row < 2; row++) {
            for (int i = 0; i < CACHED_ITEMS; i++) {
                Py_VISIT(cache->items[row][i]);
            }
        }
    }
    return 0;
}

static int
pairs_clear(PyObject *module)
{
    pairs_cache *cache = PyModule_GetState(module);
    if (cache != NULL) {
        for (int row = 0; row < 2; row++) {
            for (int i = 0; i < CACHED_ITEMS; i++) {
                Py_CLEAR(cache->items[row][i]);
            }
        }
    }
    return 0;
}

static void
pairs_free(void *module)
{
    (void)pairs_clear((PyObject *)module);
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "decode(data, text) -> list of (name, value) pairs; ValueError if malformed."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_pairs",
    .m_doc = "FastCGI name-value pairs decoder (C speedup).",
    .m_size = sizeof(pairs_cache),
    .m_methods = methods,
    .m_slots = slots,
    .m_traverse = pairs_traverse,
    .m_clear = pairs_clear,
    .m_free = pairs_free,
};

PyMODINIT_FUNC
PyInit__pairs(void)
{
    return PyModuleDef_Init(&module_def);
}
