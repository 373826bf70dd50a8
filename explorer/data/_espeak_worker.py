"""eSpeak NG in a small helper process that forks a fresh copy of itself for every utterance (run by path).

Why a process: eSpeak NG keeps state between utterances inside the library (the pitch flutter's phase runs on, and
frication noise and breath come from libc ``rand()`` and eSpeak's own generator), so the same text spoken twice in one process differs by a few samples
and its word times by up to half a millisecond. This worker loads and initialises the library once and then, for
each request, forks: the child starts from the same pristine state, seeds both generators with the request's seed,
speaks,
writes the result and exits. The same request therefore always gives the same samples, in any process and after any
history. The worker imports nothing but the standard library and ``espeakng_loader`` (a fork of it costs about a
millisecond); it is not meant to be imported.

Protocol (binary stdin/stdout): the worker first writes one JSON line ``{"ok": true, "version": ...}`` (or
``{"ok": false, "error": ...}`` and exits). Each request is one JSON line ``{"text", "voice", "rate", "pitch",
"seed"}``; each answer is one JSON line ``{"ok": true, "status": int, "samples": n, "events": [[type, text_position,
sample, name], ...]}`` followed by ``2 * n`` bytes of little-endian int16 audio at 22 050 Hz, or ``{"ok": false,
"error": ...}``.
"""

import ctypes
import ctypes.util
import json
import os
import sys

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS, INITIALIZE_DONT_EXIT = 0x0001, 0x8000
EVENT_LIST_TERMINATED, EVENT_PHONEME = 0, 7
PARAM_RATE, PARAM_PITCH = 1, 3
POS_CHARACTER, CHARS_UTF8 = 1, 1


class EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", EventId)]


CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))


def load():
    """(library, data path or None); raises OSError when neither the wheel nor a system library loads."""
    try:
        import espeakng_loader
        return ctypes.CDLL(espeakng_loader.get_library_path()), espeakng_loader.get_data_path().encode()
    except (ImportError, OSError, RuntimeError):
        pass
    name = ctypes.util.find_library("espeak-ng")
    if name is None:
        raise OSError("no eSpeak NG library found")
    return ctypes.CDLL(name), None


def write(out, header, payload=b""):
    out.write(json.dumps(header).encode() + b"\n" + payload)
    out.flush()


def speak(lib, request, out):
    """In the forked child: speak one request and write the answer."""
    audio, events = [], []

    def collect(wav, n, ev):
        if n > 0:
            audio.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while ev[i].type != EVENT_LIST_TERMINATED:
            e = ev[i]
            name = bytes(e.id.string).rstrip(b"\0").decode("latin-1") if e.type == EVENT_PHONEME else ""
            events.append([e.type, e.text_position, e.sample, name])
            i += 1
        return 0

    callback = CALLBACK(collect)
    lib.espeak_SetSynthCallback(callback)
    seed = int(request["seed"]) & 0x7FFFFFFF
    ctypes.CDLL(None).srand(seed)              # libc rand(): frication noise
    if hasattr(lib, "espeak_ng_SetRandSeed"):  # eSpeak NG's own generator (breathy variants such as f2, f3, f5)
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed(seed)
    if lib.espeak_SetVoiceByName(request["voice"].encode()) != 0:
        write(out, {"ok": False, "error": "voice"})
        return
    lib.espeak_SetParameter(PARAM_RATE, int(request["rate"]), 0)
    lib.espeak_SetParameter(PARAM_PITCH, int(request["pitch"]), 0)
    data = request["text"].encode()
    status = lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
    payload = b"".join(audio)
    write(out, {"ok": True, "status": status, "samples": len(payload) // 2, "events": events}, payload)


def main():
    out = sys.stdout.buffer
    try:
        lib, data = load()
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data,
                                     INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT)
        if rate != 22050:
            raise OSError(f"espeak_Initialize returned {rate}")
        version = lib.espeak_Info(None).decode()
    except OSError as error:
        write(out, {"ok": False, "error": str(error)})
        return
    write(out, {"ok": True, "version": version, "sample_rate": rate})
    for line in sys.stdin.buffer:
        request = json.loads(line)
        out.flush()
        pid = os.fork()
        if pid == 0:  # the child: pristine library state
            try:
                speak(lib, request, out)
            except Exception as error:  # noqa: BLE001 - reported to the parent, which raises
                write(out, {"ok": False, "error": f"{type(error).__name__}: {error}"})
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):  # the child died before answering
            write(out, {"ok": False, "error": f"eSpeak NG crashed (signal {os.WTERMSIG(status)})"})


if __name__ == "__main__":
    main()
