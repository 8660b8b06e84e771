"""logferry's saved checkpoints as logferry loads them: the snapshot
(<data_dir>/checkpoints.json) and the journal it names (checkpoints.journal.<n>), up
to a torn last line. See src/tail/checkpoint.rs.

    python3 benches/checkpoints.py DATA_DIR     prints the sum of the offsets
    from checkpoints import offsets             {path: offset}
"""
import json
import os
import sys


def offsets(data_dir: str) -> dict:
    try:
        with open(os.path.join(data_dir, "checkpoints.json"), "rb") as f:
            snapshot = json.load(f)
    except (OSError, ValueError):
        return {}
    at = {s["path"]: s["offset"] for s in snapshot.get("streams", [])}
    generation = snapshot.get("journal")
    if generation is None:
        return at
    try:
        with open(os.path.join(data_dir, f"checkpoints.journal.{generation}"), "rb") as f:
            journal = f.read()
    except OSError:
        return at
    for line in journal.split(b"\n")[:-1]:
        try:
            change = json.loads(line)
        except ValueError:
            break
        if change.get("gone"):
            at.pop(change["path"], None)
        else:
            at[change["path"]] = change["offset"]
    return at


if __name__ == "__main__":
    print(sum(offsets(sys.argv[1]).values()))
