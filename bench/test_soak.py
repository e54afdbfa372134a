"""The soak's sampling arithmetic: python3 -m unittest discover -s bench"""

import os
import tempfile
import unittest

from soak import segments_on_disk, slope, summarize


def row(run, t_s, rss_kib, fds=10, segments=1, backlog=0):
    return {"run": run, "t_s": t_s, "rss_kib": rss_kib, "fds": fds, "segments": segments,
            "backlog_records": backlog}


class Soak(unittest.TestCase):
    def test_the_slope_is_least_squares_and_zero_without_two_points(self):
        self.assertAlmostEqual(slope([0, 1, 2, 3], [1, 3, 5, 7]), 2.0)
        self.assertAlmostEqual(slope([0, 1, 2, 3], [5, 5, 5, 5]), 0.0)
        self.assertEqual(slope([1], [4]), 0.0)
        self.assertEqual(slope([2, 2], [1, 9]), 0.0)

    def test_the_rss_slope_reads_only_the_second_half_so_warm_up_is_no_leak(self):
        # Warm-up climbs 1,000 KiB in the first half, then RSS stays flat.
        rows = [row("a", t, 1000 + min(t, 50) * 20) for t in range(0, 101, 10)]
        s = summarize(rows)["a"]
        self.assertEqual(s["rss_kib"], (1000, 2000, 2000))
        self.assertAlmostEqual(s["rss_slope_kib_per_min"], 0.0)

    def test_a_steady_climb_is_reported_per_minute_and_runs_stay_apart(self):
        rows = [row("leak", t, 1000 + t) for t in range(0, 601, 10)]
        rows += [row("flat", t, 500, segments=1 + t // 100) for t in range(0, 601, 10)]
        out = summarize(rows)
        self.assertAlmostEqual(out["leak"]["rss_slope_kib_per_min"], 60.0)
        self.assertAlmostEqual(out["flat"]["rss_slope_kib_per_min"], 0.0)
        self.assertEqual(out["flat"]["segments"], (1, 7, 7))

    def test_only_segment_files_count_not_the_spare_or_the_checkpoint(self):
        with tempfile.TemporaryDirectory() as d:
            for name in ("00000001.wal", "00000002.wal", "spare.wal.tmp", "spare.wal.partial",
                         "checkpoint", "lock"):
                open(os.path.join(d, name), "w").close()
            self.assertEqual(segments_on_disk(d), 2)


if __name__ == "__main__":
    unittest.main()
