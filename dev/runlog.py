"""runlog.py — the trainers' JSONL log, read and checked record by record, for plot.py and
dev/experiments/report.py; and the rule for the files those tools write.

A log (plain, or .gz once a run is complete) holds one JSON object a line, each with an integer
"step" and one of:
    {"config": {...}}                                   the run's flags (a fresh log's first record)
    {"loss", "lr", "grad_norm", "tok_per_s", "ms"}      a training step (a non-finite number: null)
    {"val_loss"}                                        a val evaluation (null: not finite)
    {"needle": GRID, "text_needle": GRID, "recall": R}  an eval (text_needle and recall where run)
GRID is {"lengths", "depths", "acc": (length, depth), "retrieval_len", "attn_layers": [{"layer",
"type", "score": (head)}]}; R is {"edges", "acc": (bin), "attn_layers": [{"layer", "type", "score":
(head, bin)}], "ablation": {"names", "acc": (ablation, bin)}}, with bins = edges + 1.
Every field a tool reads is checked here, so a damaged or foreign log stops the tool with one line
naming the file, the line and the field (LogError), never a traceback. A plain log's last line
without its newline is a record still being written by a running trainer: left out, with a note.
"""
import gzip
import json
import math
import os
import sys


class LogError(Exception):
    """one line: what is wrong with which file (the tools print it after 'error: ' and exit 1)"""


class Log:
    """One log's records, in file order: config (dict or None), train [(step, record)], val [(step,
    loss or None)], evals [(step, needle GRID)], text [(step, GRID)], recall [(step, R)]."""

    def __init__(self, path):
        self.path, self.config = path, None
        self.train, self.val, self.evals, self.text, self.recall = [], [], [], [], []


def _where(path, n, key):
    return f"{path}:{n}: {key}"


def _num(v, where, lo=-math.inf, hi=math.inf, null=False):
    """a JSON number in [lo, hi] (null allowed where the trainer writes it for a non-finite value)"""
    if v is None and null:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        want = f"a number in [{lo:g}, {hi:g}]" if math.isfinite(lo) or math.isfinite(hi) else "a number"
        raise LogError(f"{where} is {json.dumps(v)[:40]}, expected {want}{' or null' if null else ''}")
    return v


def _int(v, where, lo=0):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise LogError(f"{where} is {json.dumps(v)[:40]}, expected an integer >= {lo}")
    return v


def _str(v, where):
    if not isinstance(v, str):
        raise LogError(f"{where} is {json.dumps(v)[:40]}, expected a string")
    return v


def _list(v, where, n=None, item=None):
    """a non-empty list (of exactly n items when n is given), each checked by item(x, where[i])"""
    if not isinstance(v, list) or not v or (n is not None and len(v) != n):
        size = f"{n} items" if n is not None else "items"
        raise LogError(f"{where} is {json.dumps(v)[:40]}, expected a list of {size}")
    if item:
        for i, x in enumerate(v):
            item(x, f"{where}[{i}]")
    return v


def _field(rec, key, where):
    if not isinstance(rec, dict) or key not in rec:
        raise LogError(f"{where}: no \"{key}\"")
    return rec[key]


def _heads(layers, where, shape):
    """attn_layers: [{"layer", "type", "score": shape}] with the same head count in every layer (an
    empty list for a model without attention layers)"""
    if layers == []:
        return
    _list(layers, where)
    for i, a in enumerate(layers):
        w = f"{where}[{i}]"
        _int(_field(a, "layer", w), w + ".layer")
        if _field(a, "type", w) not in ("F", "S"):
            raise LogError(f"{w}.type is {json.dumps(a['type'])[:40]}, expected \"F\" or \"S\"")
        shape(_field(a, "score", w), w + ".score")
        if len(a["score"]) != len(layers[0]["score"]):
            raise LogError(f"{w}.score has {len(a['score'])} heads, layer {layers[0]['layer']} {len(layers[0]['score'])}")


def _grid(g, where):
    """a needle GRID (see the header)"""
    prob = lambda x, w: _num(x, w, 0.0, 1.0)
    lengths = _list(_field(g, "lengths", where), where + ".lengths", item=lambda x, w: _int(x, w, 1))
    depths = _list(_field(g, "depths", where), where + ".depths", item=lambda x, w: _num(x, w, 0.0, 1.0))
    _list(_field(g, "acc", where), where + ".acc", len(lengths), lambda row, w: _list(row, w, len(depths), prob))
    _int(_field(g, "retrieval_len", where), where + ".retrieval_len", 1)
    _heads(_field(g, "attn_layers", where), where + ".attn_layers", lambda s, w: _list(s, w, item=prob))


def _recall(r, where):
    """a recall record R (see the header)"""
    prob = lambda x, w: _num(x, w, 0.0, 1.0)
    edges = _list(_field(r, "edges", where), where + ".edges", item=lambda x, w: _int(x, w, 1))
    bins = len(edges) + 1
    _list(_field(r, "acc", where), where + ".acc", bins, prob)
    _heads(_field(r, "attn_layers", where), where + ".attn_layers",
           lambda s, w: _list(s, w, item=lambda h, wh: _list(h, wh, bins, prob)))
    if "ablation" in r:
        ab, w = r["ablation"], where + ".ablation"
        names = _list(_field(ab, "names", w), w + ".names", item=_str)
        _list(_field(ab, "acc", w), w + ".acc", len(names), lambda row, wr: _list(row, wr, bins, prob))


def _config(c, where):
    """the config record's fields the tools read (others are kept as they are)"""
    if not isinstance(c, dict):
        raise LogError(f"{where} is {json.dumps(c)[:40]}, expected an object")
    for key in ("T", "L", "steps", "needle_key", "needle_val", "needle_density", "needle_queries", "needle_symbols", "seed"):
        if key in c:
            _int(c[key], f"{where}.{key}")
    if "pattern" in c:
        _str(c["pattern"], where + ".pattern")
    if "windows" in c:
        _list(c["windows"], where + ".windows", item=lambda x, w: _int(x, w, 1))


def _lines(path):
    """(line number, text, ends with a newline) of a log, or LogError on a file that is not one"""
    if os.path.isdir(path):
        raise LogError(f"{path}: a folder, expected a log file")
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")) as f:
            return [(n, line, line.endswith("\n")) for n, line in enumerate(f, 1)]
    except FileNotFoundError:
        raise LogError(f"{path}: no such log file")
    except UnicodeDecodeError as e:
        raise LogError(f"{path}: byte 0x{e.object[e.start]:02x} is not UTF-8 (the trainers write UTF-8 logs)")
    except (gzip.BadGzipFile, EOFError, OSError) as e:  # a fake or cut .gz, an unreadable file
        raise LogError(f"{path}: cannot read it: {e.strerror if isinstance(e, OSError) and e.strerror else e}")


def read(path):
    """the Log of one file (plain or .gz), every record checked; LogError names the first fault"""
    log = Log(path)
    lines = _lines(path)
    for n, line, whole in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if not whole and n == lines[-1][0] and not path.endswith(".gz"):
                print(f"note: {path}:{n}: the last line is incomplete (a run still writing it?): left out", file=sys.stderr)
                continue
            raise LogError(f"{path}:{n}: not JSON ({e.msg}, column {e.colno})")
        step = _int(_field(rec, "step", f"{path}:{n}"), _where(path, n, "step"))
        if "config" in rec:
            _config(rec["config"], _where(path, n, "config"))
            log.config = rec["config"]
        elif "loss" in rec:
            _num(rec["loss"], _where(path, n, "loss"), null=True)
            for key in ("tok_per_s", "ms"):
                if key in rec:
                    _num(rec[key], _where(path, n, key), 0.0, null=True)
            log.train.append((step, rec))
        elif "val_loss" in rec:
            log.val.append((step, _num(rec["val_loss"], _where(path, n, "val_loss"), null=True)))
        elif "needle" in rec or "recall" in rec:
            if "needle" in rec:
                _grid(rec["needle"], _where(path, n, "needle"))
                log.evals.append((step, rec["needle"]))
            if "text_needle" in rec:
                _grid(rec["text_needle"], _where(path, n, "text_needle"))
                log.text.append((step, rec["text_needle"]))
            if "recall" in rec:
                _recall(rec["recall"], _where(path, n, "recall"))
                log.recall.append((step, rec["recall"]))
        else:
            raise LogError(f"{path}:{n}: a record with none of config, loss, val_loss, needle, recall: not a trainer's log?")
    return log


def out_folder(path, flag, inputs):
    """Makes the output folder `path` (given by `flag`) and checks it can take the tool's files: a
    folder, writable, and none of the `inputs` (the logs read) inside it under a name the tools
    write (*.png, *.md, lr.txt)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise LogError(f"{flag} {path}: exists and is not a folder (give a folder for the output files)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise LogError(f"{flag} {path}: cannot create it: {e.strerror}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise LogError(f"{flag} {path}: not writable")
    here = os.path.realpath(path)
    for x in inputs:
        name = os.path.basename(x)
        if os.path.dirname(os.path.realpath(x)) == here and (name.endswith((".png", ".md")) or name == "lr.txt"):
            raise LogError(f"{flag} {path}: would overwrite the input {x} (name the log .jsonl, or write elsewhere)")
    return path


def write_text(path, text):
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise LogError(f"{path}: cannot write it: {e.strerror}")


def save_figure(fig, plt, path, **kw):
    """fig to path (PNG), closed either way"""
    try:
        fig.savefig(path, dpi=120, **kw)
    except OSError as e:
        raise LogError(f"{path}: cannot write it: {e.strerror}")
    finally:
        plt.close(fig)


def run_tool(main):
    """main() with a LogError as one line on stderr and exit status 1"""
    try:
        main()
    except LogError as e:
        sys.exit(f"error: {e}")
