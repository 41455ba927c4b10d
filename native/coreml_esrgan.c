/*
 * coreml_esrgan: a VapourSynth API4 plugin that gives vs-coreml-esrgan a real namespace.
 *
 * core.coreml_esrgan.Upscale(clip, ...) forwards its arguments to the Python function
 * vs_coreml_esrgan.upscale. A plugin cannot call Python with VapourSynth values directly,
 * so each call makes a round trip:
 *
 *   Upscale (C)  -> imports vs_coreml_esrgan._namespace and calls provide()
 *   provide (Py) -> core.coreml_esrgan.RegisterImplementation(impl=<python callable>)
 *   RegisterImplementation (C) -> keeps that VSFunction in a thread-local slot
 *   Upscale (C)  -> callFunction(impl, its own arguments), returns "val" as "clip"
 *
 * The VSFunction lives only for the duration of one Upscale call, so nothing outlives a
 * core. Python is reached through dlsym, not linked: the plugin loads in any host and only
 * Upscale needs a Python that can import the package.
 *
 * Read bottom-up: VapourSynthPluginInit2 -> upscaleCreate -> the Python helpers.
 */

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "VapourSynth4.h"

#ifndef PLUGIN_VERSION_MAJOR
#define PLUGIN_VERSION_MAJOR 0
#endif
#ifndef PLUGIN_VERSION_MINOR
#define PLUGIN_VERSION_MINOR 0
#endif

#define FILTER "Upscale"
#define BRIDGE_MODULE "vs_coreml_esrgan._namespace"
#define INSTALL_HINT "install it into the Python that runs VapourSynth: " \
                     "python -m pip install vs-coreml-esrgan"

/* The few CPython entry points used, resolved at call time. */
typedef struct PyObject PyObject;
typedef int GilState;
typedef struct {
    int (*IsInitialized)(void);
    GilState (*GILStateEnsure)(void);
    void (*GILStateRelease)(GilState);
    PyObject *(*ImportModule)(const char *);
    PyObject *(*GetAttrString)(PyObject *, const char *);
    PyObject *(*CallNoArgs)(PyObject *);
    void (*ErrFetch)(PyObject **, PyObject **, PyObject **);
    void (*ErrNormalize)(PyObject **, PyObject **, PyObject **);
    PyObject *(*Str)(PyObject *);
    const char *(*AsUTF8)(PyObject *);
    void (*DecRef)(PyObject *);
} PythonApi;

/* The implementation handed over by RegisterImplementation, for the Upscale call running
 * on this thread, with the core it was registered on. */
static _Thread_local VSFunction *pendingImpl = NULL;
static _Thread_local VSCore *pendingCore = NULL;

static int loadPythonApi(PythonApi *py) {
    void *self = RTLD_DEFAULT;
    py->IsInitialized = (int (*)(void))dlsym(self, "Py_IsInitialized");
    py->GILStateEnsure = (GilState (*)(void))dlsym(self, "PyGILState_Ensure");
    py->GILStateRelease = (void (*)(GilState))dlsym(self, "PyGILState_Release");
    py->ImportModule = (PyObject *(*)(const char *))dlsym(self, "PyImport_ImportModule");
    py->GetAttrString = (PyObject *(*)(PyObject *, const char *))dlsym(self, "PyObject_GetAttrString");
    py->CallNoArgs = (PyObject *(*)(PyObject *))dlsym(self, "PyObject_CallNoArgs");
    py->ErrFetch = (void (*)(PyObject **, PyObject **, PyObject **))dlsym(self, "PyErr_Fetch");
    py->ErrNormalize = (void (*)(PyObject **, PyObject **, PyObject **))dlsym(self, "PyErr_NormalizeException");
    py->Str = (PyObject *(*)(PyObject *))dlsym(self, "PyObject_Str");
    py->AsUTF8 = (const char *(*)(PyObject *))dlsym(self, "PyUnicode_AsUTF8");
    py->DecRef = (void (*)(PyObject *))dlsym(self, "Py_DecRef");
    return py->IsInitialized && py->GILStateEnsure && py->GILStateRelease && py->ImportModule &&
           py->GetAttrString && py->CallNoArgs && py->ErrFetch && py->ErrNormalize && py->Str &&
           py->AsUTF8 && py->DecRef && py->IsInitialized();
}

/* Describe the pending Python exception as "Type: message" into buf and clear it. */
static void takePythonError(const PythonApi *py, char *buf, size_t size) {
    PyObject *type = NULL, *value = NULL, *traceback = NULL;
    py->ErrFetch(&type, &value, &traceback);
    py->ErrNormalize(&type, &value, &traceback);
    const char *typeName = "error", *message = "";
    PyObject *typeText = NULL, *valueText = NULL, *nameObj = NULL;
    if (type && (nameObj = py->GetAttrString(type, "__name__")) && (typeText = py->Str(nameObj)))
        typeName = py->AsUTF8(typeText);
    if (value && (valueText = py->Str(value)))
        message = py->AsUTF8(valueText);
    snprintf(buf, size, "%s: %s", typeName ? typeName : "error", message ? message : "");
    PyObject *owned[] = {typeText, valueText, nameObj, type, value, traceback};
    for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++)
        if (owned[i])
            py->DecRef(owned[i]);
}

/* Import the bridge module and let it register the implementation. Returns 0 and fills
 * error on failure. */
static int requestImplementation(char *error, size_t size) {
    PythonApi py;
    if (!loadPythonApi(&py)) {
        snprintf(error, size, FILTER ": no Python interpreter is running in this process; "
                 "use vs_coreml_esrgan from a Python host (vspipe with a .vpy script, or python)");
        return 0;
    }
    GilState gil = py.GILStateEnsure();
    int ok = 0;
    char detail[1024] = "";
    PyObject *module = py.ImportModule(BRIDGE_MODULE);
    if (!module) {
        takePythonError(&py, detail, sizeof(detail));
        snprintf(error, size, FILTER ": the Python package vs_coreml_esrgan cannot be imported "
                 "(%s); " INSTALL_HINT, detail);
    } else {
        PyObject *provide = py.GetAttrString(module, "provide");
        PyObject *result = provide ? py.CallNoArgs(provide) : NULL;
        if (!result) {
            takePythonError(&py, detail, sizeof(detail));
            snprintf(error, size, FILTER ": vs_coreml_esrgan could not register its "
                     "implementation (%s)", detail);
        } else {
            ok = 1;
            py.DecRef(result);
        }
        if (provide)
            py.DecRef(provide);
        py.DecRef(module);
    }
    py.GILStateRelease(gil);
    return ok;
}

static void VS_CC registerImplementationCreate(const VSMap *in, VSMap *out, void *userData,
                                               VSCore *core, const VSAPI *vsapi) {
    (void)out;
    (void)userData;
    if (pendingImpl)
        vsapi->freeFunction(pendingImpl);
    pendingImpl = vsapi->mapGetFunction(in, "impl", 0, NULL);
    pendingCore = core;
}

static void VS_CC upscaleCreate(const VSMap *in, VSMap *out, void *userData, VSCore *core,
                                const VSAPI *vsapi) {
    (void)userData;
    char error[2048];
    if (!requestImplementation(error, sizeof(error))) {
        vsapi->mapSetError(out, error);
        return;
    }
    VSFunction *impl = pendingImpl;
    VSCore *implCore = pendingCore;
    pendingImpl = NULL;
    pendingCore = NULL;
    if (!impl) {
        vsapi->mapSetError(out, FILTER ": vs_coreml_esrgan did not register an implementation");
        return;
    }
    if (implCore != core) {
        vsapi->freeFunction(impl);
        vsapi->mapSetError(out, FILTER ": called in one VapourSynth environment while Python's "
                           "current core is another; call it from that environment's script");
        return;
    }
    VSMap *result = vsapi->createMap();
    vsapi->callFunction(impl, in, result);
    vsapi->freeFunction(impl);
    const char *failure = vsapi->mapGetError(result);
    if (failure) {
        /* The Python side already prefixes its messages with "Upscale: ". */
        snprintf(error, sizeof(error), "%s%s", strncmp(failure, FILTER ": ", strlen(FILTER) + 2)
                 ? FILTER ": " : "", failure);
        vsapi->mapSetError(out, error);
    } else if (vsapi->mapGetType(result, "val") == ptData) {
        /* A bad argument: the implementation returns its message instead of raising. */
        vsapi->mapSetError(out, vsapi->mapGetData(result, "val", 0, NULL));
    } else {
        int err = 0;
        VSNode *node = vsapi->mapGetNode(result, "val", 0, &err);
        if (err)
            vsapi->mapSetError(out, FILTER ": the Python implementation returned no clip");
        else
            vsapi->mapConsumeNode(out, "clip", node, maReplace);
    }
    vsapi->freeMap(result);
}

VS_EXTERNAL_API(void) VapourSynthPluginInit2(VSPlugin *plugin, const VSPLUGINAPI *vspapi) {
    vspapi->configPlugin("io.github.vs-coreml-esrgan", "coreml_esrgan",
                         "Real-ESRGAN upscaling (Core ML on Apple Silicon, PyTorch elsewhere)",
                         VS_MAKE_VERSION(PLUGIN_VERSION_MAJOR, PLUGIN_VERSION_MINOR),
                         VAPOURSYNTH_API_VERSION, 0, plugin);
    vspapi->registerFunction(FILTER,
                             /* Numbers are declared data: VapourSynth's Python layer
                              * would int() them (4.5 -> 4, True -> 1, 'abc' -> a raw
                              * ValueError); as text the Python side checks them. */
                             "clip:vnode;model:data:opt;tile:data[]:opt;overlap:data:opt;"
                             "backend:data:opt;device:data:opt;precision:data:opt;batch:data:opt;"
                             "compute_units:data:opt;prefer:data:opt;",
                             "clip:vnode;", upscaleCreate, NULL, plugin);
    vspapi->registerFunction("RegisterImplementation", "impl:func;", "", registerImplementationCreate,
                             NULL, plugin);
}
