"""The bundled HIS simulator: a separate process with its own SQLite state, speaking
the FHIR R4 API the client uses, with fault injection for tests and demos.
See docs/his.md; run it with ``inventory his-sim``."""
