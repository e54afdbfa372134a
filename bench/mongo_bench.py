"""MongoDB side of scripts/bench.sh (run with .venv/bin/python, which has pymongo).

    mongo_bench.py count  URI DB COLLECTION
        Prints the exact number of documents in the collection.

    mongo_bench.py prepare URI DB COLLECTION
        Creates the collection with busyapi's index {patientId: 1,
        timestamp: 1}, so busyapi's first batches do not race the
        collection's creation (the dev server was once seen to deadlock on
        createIndexes concurrent with two inserts into a new collection).

    mongo_bench.py insert URI DB COLLECTION N [BATCH] [noindex]
        The bare insert-many client: inserts N documents shaped like
        busyapi's ({_id: Int64, patientId, timestamp: Date, medication,
        receivedAt: Date}) with unordered insert_many of BATCH (default 1000)
        and write concern {w: 1, j: true}, as busyapi's flusher does. Like
        busyapi it first creates the index {patientId: 1, timestamp: 1},
        unless "noindex" is given. The documents are built before the clock
        starts. Prints "INSERT docs=N seconds=S docs_per_s=R".
"""

import datetime
import sys
import time

from bson.int64 import Int64
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

MEDICATIONS = ["Albuterol", "Levalbuterol", "Fluticasone", "Budesonide", "Ipratropium"]
# 2016-11-01T14:11:51Z, the contract example's instant.
BASE = datetime.datetime(2016, 11, 1, 14, 11, 51, tzinfo=datetime.timezone.utc)


def client(uri):
    return MongoClient(uri, serverSelectionTimeoutMS=10_000)


def count(uri, db, coll):
    with client(uri) as c:
        print(c[db][coll].count_documents({}))


def prepare(uri, db, coll):
    with client(uri) as c:
        c[db][coll].create_index([("patientId", 1), ("timestamp", 1)])


def insert(uri, db, coll, n, batch, index):
    received = datetime.datetime.now(datetime.timezone.utc)
    docs = [
        {
            "_id": Int64(i + 1),
            "patientId": str(100 + i),
            "timestamp": BASE + datetime.timedelta(seconds=i),
            "medication": MEDICATIONS[i % len(MEDICATIONS)],
            "receivedAt": received,
        }
        for i in range(n)
    ]
    with client(uri) as c:
        c.admin.command("ping")
        target = c[db].get_collection(coll, write_concern=WriteConcern(w=1, j=True))
        if index:
            target.create_index([("patientId", 1), ("timestamp", 1)])
        started = time.perf_counter()
        for at in range(0, n, batch):
            target.insert_many(docs[at : at + batch], ordered=False)
        seconds = time.perf_counter() - started
    print(f"INSERT docs={n} seconds={seconds:.3f} docs_per_s={n / seconds:.1f}")


def main(argv):
    if len(argv) == 5 and argv[1] == "count":
        count(argv[2], argv[3], argv[4])
    elif len(argv) == 5 and argv[1] == "prepare":
        prepare(argv[2], argv[3], argv[4])
    elif len(argv) in (6, 7, 8) and argv[1] == "insert":
        batch = int(argv[6]) if len(argv) >= 7 else 1000
        index = not (len(argv) == 8 and argv[7] == "noindex")
        insert(argv[2], argv[3], argv[4], int(argv[5]), batch, index)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
