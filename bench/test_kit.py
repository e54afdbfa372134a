"""The parsing in bench/kit.py: python3 -m unittest discover -s bench"""

import unittest

import kit


class ProcStat(unittest.TestCase):
    def test_cpu_is_utime_plus_stime_in_seconds_even_with_spaces_in_the_name(self):
        # Fields after the name: state ppid pgrp session tty tpgid flags
        # minflt cminflt majflt cmajflt utime stime ...
        line = "4242 (wal writer) S 1 4242 4242 0 -1 4194560 10 0 0 0 250 130 0 0 20 0 9"
        self.assertAlmostEqual(kit.proc_cpu_s(line, 100), 3.8)

    def test_status_fields_are_kib_and_a_missing_one_is_none(self):
        status = "Name:\tbusyapi\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n"
        self.assertEqual(kit.status_kib(status, "VmHWM"), 20480)
        self.assertEqual(kit.status_kib(status, "VmRSS"), 10240)
        self.assertIsNone(kit.status_kib(status, "VmSwap"))


    def test_machine_shares_are_the_tick_deltas_over_their_total(self):
        before = kit.cpu_ticks("cpu  100 10 50 800 5 0 5 30 0 0\ncpu0 1 2 3 4 5 6 7 8\n")
        after = kit.cpu_ticks("cpu  160 30 70 880 5 0 5 50 0 0\n")
        share = kit.cpu_shares(before, after)
        self.assertAlmostEqual(share["user"], 0.3)
        self.assertAlmostEqual(share["nice"], 0.1)
        self.assertAlmostEqual(share["idle"], 0.4)
        self.assertAlmostEqual(share["steal"], 0.1)


class Oha(unittest.TestCase):
    def test_percentiles_are_milliseconds_and_non_2xx_are_counted(self):
        report = {
            "statusCodeDistribution": {"201": 990, "503": 10},
            "latencyPercentiles": {"p50": 0.0005, "p99": 0.002, "p99.9": 0.004},
        }
        self.assertEqual(kit.oha_figures(report), (1000, 0.5, 2.0, 4.0, 10))


class Wrk(unittest.TestCase):
    LINE = ("BENCH rps=58167.20 p50_ms=0.91 p90_ms=1.50 p99_ms=3.70 requests=872508"
            " non2xx=0 n201=-1 socket_errors=0")

    def test_the_bench_line_gives_rate_latency_and_counts(self):
        self.assertEqual(kit.wrk_figures(kit.fields(self.LINE)), (58167.2, 0.91, 3.7, 872508, 0))

    def test_the_last_line_with_a_prefix_wins(self):
        text = "Running 1s test\nBENCH rps=1\nnoise\nBENCH rps=2\n"
        self.assertEqual(kit.last_line(text, "BENCH "), "BENCH rps=2")
        self.assertIsNone(kit.last_line("no such line", "BENCH "))

    def test_script_arguments_follow_a_double_dash(self):
        argv = kit.wrk_argv("http://h", 50, "2s", "usages.lua", ["limit=10"])
        self.assertEqual(argv[:5], ["wrk", "-t1", "-c50", "-d2s", "--latency"])
        self.assertEqual(argv[-2:], ["--", "limit=10"])
        self.assertNotIn("--", kit.wrk_argv("http://h", 50, "2s", "usages.lua"))


if __name__ == "__main__":
    unittest.main()
