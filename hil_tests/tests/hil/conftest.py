"""HIL bench fixtures (``fieldrig_hil.bench.fixtures``) until the plugin registers them."""

from fieldrig_hil.bench.fixtures import bench_report, bench_rig, pytest_configure

__all__ = ["bench_report", "bench_rig", "pytest_configure"]
