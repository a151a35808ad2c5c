"""Master data: items, locations, partners; their CSV import and export."""
