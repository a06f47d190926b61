"""Reports: tables, figures, and (later) experiment pages."""
