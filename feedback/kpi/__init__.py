"""KPI layer: versioned DuckDB SQL over the lake, materialised incrementally into KPI tables."""
