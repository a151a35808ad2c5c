"""Read models for analysts and managers: KPIs per site, CSV exports."""
