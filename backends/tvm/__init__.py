"""The TVM backend: Graph → Relax → compiled library run by the Relax VM."""
