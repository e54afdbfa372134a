"""The arithmetic of bench/sidebyside.py: python3 -m unittest discover bench"""

import unittest

import sidebyside


class ProcStat(unittest.TestCase):
    def test_cpu_is_utime_plus_stime_in_seconds_even_with_spaces_in_the_name(self):
        # Fields after the name: state ppid pgrp session tty tpgid flags
        # minflt cminflt majflt cmajflt utime stime ...
        line = "4242 (wal writer) S 1 4242 4242 0 -1 4194560 10 0 0 0 250 130 0 0 20 0 9"
        self.assertAlmostEqual(sidebyside.proc_cpu_s(line, 100), 3.8)


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


class Oha(unittest.TestCase):
    def test_percentiles_are_milliseconds_and_non_2xx_are_counted(self):
        report = {
            "statusCodeDistribution": {"201": 990, "503": 10},
            "latencyPercentiles": {"p50": 0.0005, "p99": 0.002, "p99.9": 0.004},
        }
        self.assertEqual(sidebyside.oha_figures(report), (1000, 0.5, 2.0, 4.0, 10))


class Wrk(unittest.TestCase):
    def test_the_bench_line_gives_rate_latency_and_counts(self):
        line = ("BENCH rps=58167.20 p50_ms=0.91 p90_ms=1.50 p99_ms=3.70 requests=872508"
                " non2xx=0 n201=-1 socket_errors=0")
        self.assertEqual(sidebyside.wrk_figures(line), (58167.2, 0.91, 3.7, 872508, 0))


class Stats(unittest.TestCase):
    def test_medians_skip_missing_values_and_ratios_refuse_zero(self):
        self.assertEqual(sidebyside.median_or_none([3, None, 1, 2]), 2)
        self.assertIsNone(sidebyside.median_or_none([None]))
        self.assertIsNone(sidebyside.ratio(1.0, 0))
        self.assertAlmostEqual(sidebyside.ratio(3.0, 2.0), 1.5)


if __name__ == "__main__":
    unittest.main()
