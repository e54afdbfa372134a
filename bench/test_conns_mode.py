"""The conns mode's arithmetic: python3 -m unittest discover -s bench"""

import unittest

from conns_mode import per_connection_kib, settled


class Conns(unittest.TestCase):
    def test_growth_is_shared_among_the_connections_and_never_negative(self):
        self.assertAlmostEqual(per_connection_kib(30_000, 95_000, 1000), 65.0)
        self.assertEqual(per_connection_kib(30_000, 29_000, 1000), 0)

    def test_rss_is_settled_only_once_two_samples_agree(self):
        self.assertFalse(settled([1000]))
        self.assertFalse(settled([1000, 2000], tolerance_kib=512))
        self.assertTrue(settled([1000, 2000, 2300], tolerance_kib=512))


if __name__ == "__main__":
    unittest.main()
