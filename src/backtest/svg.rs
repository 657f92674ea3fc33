//! Inline SVG charts for the report page (no scripts, no fonts: the page opens offline).
