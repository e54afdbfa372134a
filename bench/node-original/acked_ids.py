"""How many acknowledged ids made it into MongoDB (run with .venv/bin/python).

    acked_ids.py URI DB COLLECTION IDS_FILE

IDS_FILE holds the ids of the 201s, one a line, as ids.lua's ids_file=PATH
writes them. busyapi stores each record under _id = its id, so every
acknowledged id must be an _id in the collection. (The Node original stores
no id at all: its ids only count the in-memory array, and repeat.) Prints
"ACKED ids=N present=P missing=M documents=D".
"""

import sys

from pymongo import MongoClient


def main(argv):
    if len(argv) != 5:
        sys.exit(__doc__)
    uri, db, coll, path = argv[1:]
    with open(path) as f:
        acked = {int(line) for line in f if line.strip()}
    with MongoClient(uri, serverSelectionTimeoutMS=10_000) as c:
        stored = {d["_id"] for d in c[db][coll].find({}, {"_id": 1})}
    present = len(acked & stored)
    print(f"ACKED ids={len(acked)} present={present} missing={len(acked) - present} documents={len(stored)}")


if __name__ == "__main__":
    main(sys.argv)
