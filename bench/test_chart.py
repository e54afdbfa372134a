"""The geometry of bench/chart.py: python3 -m unittest discover -s bench"""

import unittest

import chart


class Scale(unittest.TestCase):
    def test_the_axis_top_is_the_next_1_2_or_5_times_a_power_of_ten(self):
        self.assertEqual(chart.nice_max(44.9), 50)
        self.assertEqual(chart.nice_max(78.4), 100)
        self.assertEqual(chart.nice_max(0.85), 1)
        self.assertEqual(chart.nice_max(1.8), 2)
        self.assertEqual(chart.nice_max(200), 200)
        self.assertEqual(chart.nice_max(0), 1.0)


class Bars(unittest.TestCase):
    ROWS = [{"group": g, "series": s, "value": v}
            for g, s, v in [("a", "x", 10.0), ("a", "y", 20.0), ("b", "x", 5.0), ("b", "y", 15.0)]]

    def test_bars_are_proportional_and_stand_on_the_axis(self):
        placed, top = chart.bars(self.ROWS, ["x", "y"], ["a", "b"], 200, 100)
        self.assertEqual(top, 20)
        heights = [round(p[3], 6) for p in placed]
        self.assertEqual(heights, [50.0, 100.0, 25.0, 75.0])
        for x, y, w, h, _, _ in placed:
            self.assertAlmostEqual(y + h, 100)

    def test_groups_do_not_overlap_and_fill_the_width(self):
        placed, _ = chart.bars(self.ROWS, ["x", "y"], ["a", "b"], 200, 100)
        a_end = max(x + w for x, _, w, _, _, _ in placed[:2])
        b_start = min(x for x, _, _, _, _, _ in placed[2:])
        self.assertAlmostEqual(b_start - a_end, chart.GROUP_GAP)
        self.assertAlmostEqual(max(x + w for x, _, w, _, _, _ in placed), 200)

    def test_the_svg_names_every_panel_group_and_series(self):
        rows = [{**r, "panel": "CPU", "unit": "µs"} for r in self.ROWS]
        svg = chart.render(rows)
        for text in ("CPU (µs)", ">a<", ">b<", ">x<", ">y<"):
            self.assertIn(text, svg)


if __name__ == "__main__":
    unittest.main()
