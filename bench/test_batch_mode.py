"""The arithmetic of bench/batch_mode.py: python3 -m unittest discover -s bench"""

import unittest

import batch_mode
import kit


class Sizes(unittest.TestCase):
    def test_the_default_list_parses_and_sizes_outside_what_busyapi_takes_are_refused(self):
        self.assertEqual(batch_mode.parse_sizes("1,10,100,1000"), [1, 10, 100, 1000])
        for bad in ["", "0", "1001", "10,2000"]:
            with self.assertRaises(kit.BenchError):
                batch_mode.parse_sizes(bad)


class PerRecord(unittest.TestCase):
    def test_records_per_second_and_cpu_per_record_count_every_usage_of_a_batch(self):
        # 5,000 requests/s of 100 usages at 200 µs of server CPU a request.
        self.assertEqual(batch_mode.per_record(5000.0, 100, 200.0), (500000.0, 2.0))
        self.assertEqual(batch_mode.per_record(None, 100, None), (None, None))


if __name__ == "__main__":
    unittest.main()
