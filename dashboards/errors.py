"""Errors of the dashboard package."""

from feedback.errors import FlywheelError


class DashboardError(FlywheelError):
    """The dashboard cannot show what was asked (bad query-string value, unknown page or KPI)."""
