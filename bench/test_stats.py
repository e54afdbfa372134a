"""The arithmetic of bench/stats.py: python3 -m unittest discover -s bench"""

import unittest

from stats import DrainWatch, StalledError, median, rate, ratio


class Medians(unittest.TestCase):
    def test_medians_skip_missing_values_and_ratios_refuse_zero(self):
        self.assertEqual(median([3, None, 1, 2]), 2)
        self.assertEqual(median([4, 1, 2, 3]), 2.5)
        self.assertIsNone(median([None]))
        self.assertIsNone(ratio(1.0, 0))
        self.assertIsNone(ratio(None, 2.0))
        self.assertAlmostEqual(ratio(3.0, 2.0), 1.5)

    def test_a_rate_needs_a_non_empty_interval(self):
        self.assertAlmostEqual(rate(100, 10.0, 12.0), 50.0)
        self.assertIsNone(rate(100, 10.0, 10.0))
        self.assertIsNone(rate(100, None, 12.0))


class Drain(unittest.TestCase):
    def watch(self, **kw):
        args = dict(flushed0=100, target=50, start_s=0.0, stall_s=5.0, timeout_s=60.0)
        args.update(kw)
        return DrainWatch(**args)

    def test_first_done_and_end_are_when_flushed_moved_covered_and_backlog_emptied(self):
        w = self.watch()
        self.assertFalse(w.sample(1.0, 50, 100))
        self.assertFalse(w.sample(2.0, 30, 120))
        self.assertFalse(w.sample(3.0, 1, 150))
        self.assertTrue(w.sample(4.0, 0, 150))
        self.assertEqual((w.first_s, w.done_s, w.end_s), (2.0, 3.0, 4.0))

    def test_an_empty_backlog_at_once_sets_every_instant(self):
        w = self.watch()
        self.assertTrue(w.sample(1.5, 0, 100))
        self.assertEqual((w.first_s, w.done_s, w.end_s), (1.5, 1.5, 1.5))

    def test_no_progress_for_the_stall_time_is_an_error(self):
        w = self.watch()
        w.sample(1.0, 50, 100)
        w.sample(5.0, 50, 100)
        with self.assertRaises(StalledError):
            w.sample(6.5, 50, 100)

    def test_progress_resets_the_stall_clock_but_not_the_deadline(self):
        w = self.watch(stall_s=5.0, timeout_s=10.0)
        for t in range(1, 11):
            w.sample(float(t), 50, 100 + t)
        with self.assertRaises(StalledError):
            w.sample(10.5, 50, 112)

    def test_an_unanswered_stats_read_never_counts_as_done(self):
        w = self.watch(flushed0=0, target=0)
        w.sample(1.0, 5, -1)
        self.assertIsNone(w.done_s)


if __name__ == "__main__":
    unittest.main()
