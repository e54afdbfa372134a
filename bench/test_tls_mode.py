"""The parsing and command lines of bench/tls_mode.py:
python3 -m unittest discover -s bench"""

import os
import subprocess
import tempfile
import unittest

import tls_mode


class Wrk(unittest.TestCase):
    REPORT = """Running 15s test @ https://127.0.0.1:4000/healthz
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.01ms    1.20ms  30.00ms   90.00%
  30000 requests in 15.00s, 4.00MB read
Requests/sec:   2000.50
Transfer/sec:    273.00KB
"""

    def test_requests_per_second_come_from_wrk_s_own_report(self):
        self.assertEqual(tls_mode.requests_per_s(self.REPORT), 2000.5)
        self.assertIsNone(tls_mode.requests_per_s("wrk: connection refused\n"))

    def test_a_new_connection_per_request_is_asked_for_with_connection_close(self):
        argv = tls_mode.new_connections_argv("https://127.0.0.1:4000", 64, "5s")
        self.assertEqual(argv[:4], ["wrk", "-t1", "-c64", "-d5s"])
        self.assertIn("Connection: close", argv)
        self.assertEqual(argv[-1], "https://127.0.0.1:4000/healthz")


class Certificate(unittest.TestCase):
    def test_the_run_s_certificate_is_for_127_0_0_1_and_its_key_matches(self):
        with tempfile.TemporaryDirectory() as d:
            cert, key = tls_mode.make_cert(d)
            text = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-text"],
                                  capture_output=True, text=True, check=True).stdout
            self.assertIn("IP Address:127.0.0.1", text)
            pub = lambda args: subprocess.run(["openssl", *args], capture_output=True,
                                              check=True).stdout
            self.assertEqual(pub(["x509", "-in", cert, "-noout", "-pubkey"]),
                             pub(["pkey", "-in", key, "-pubout"]))
            self.assertEqual(tls_mode.tls_flags(cert, key), f"--tls-cert {cert} --tls-key {key}")
            self.assertTrue(os.path.isfile(key))


if __name__ == "__main__":
    unittest.main()
