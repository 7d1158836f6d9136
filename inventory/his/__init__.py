"""The hospital side: the HIS client (FHIR R4 over HTTP), the simulator, and the types
and errors the flows work with. docs/his.md describes the protocol as we use it.

The public API, for the flows built on it:

- :class:`~inventory.his.client.HisClient` (the protocol), its implementation
  :class:`~inventory.his.client.FhirHisClient` and :class:`~inventory.his.client.HisClientConfig`;
- the types in :mod:`inventory.his.types`;
- the errors in :mod:`inventory.his.errors`;
- :class:`~inventory.simulators.his.process.SimProcess` to run the simulator as a child process.
"""
