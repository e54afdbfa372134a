"""The arithmetic of bench/sidebyside.py: python3 -m unittest discover bench"""

import unittest

import sidebyside


class Metrics(unittest.TestCase):
    BEFORE = "\n".join([
        "# TYPE busyapi_wal_fsync_seconds histogram",
        'busyapi_wal_fsync_seconds_bucket{le="0.001"} 90',
        "busyapi_wal_fsync_seconds_count 100",
        "busyapi_wal_commit_records_sum 400",
        "busyapi_wal_commit_records_count 100",
    ])
    AFTER = "\n".join([
        "busyapi_wal_fsync_seconds_count 600",
        "busyapi_wal_commit_records_sum 10400",
    ])

    def test_fsyncs_per_second_and_records_per_commit_come_from_the_deltas(self):
        per_s, per_commit = sidebyside.commit_stats(self.BEFORE, self.AFTER, 10.0)
        self.assertAlmostEqual(per_s, 50.0)
        self.assertAlmostEqual(per_commit, 20.0)

    def test_a_server_without_the_metrics_has_no_commit_figures(self):
        self.assertEqual(sidebyside.commit_stats("", "x 1", 10.0), (None, None))

    def test_a_labelled_sample_is_not_taken_for_the_bare_name(self):
        self.assertIsNone(
            sidebyside.prometheus_value('busyapi_wal_fsync_seconds_count{a="b"} 3',
                                        "busyapi_wal_fsync_seconds_count"))

    def test_the_count_above_a_bound_is_the_count_less_its_bucket(self):
        self.assertEqual(sidebyside.count_above(self.BEFORE, "busyapi_wal_fsync_seconds", 0.001),
                         10)

    def test_a_bound_that_is_not_a_bucket_has_no_count_above(self):
        self.assertIsNone(sidebyside.count_above(self.BEFORE, "busyapi_wal_fsync_seconds", 0.002))


if __name__ == "__main__":
    unittest.main()
