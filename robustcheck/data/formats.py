"""The built-in data readers, by file suffix (declared without importing numpy or h5py)."""

from __future__ import annotations

from robustcheck.declaration import Declaration

READERS: dict[str, Declaration] = {
    ".npz": Declaration(".npz", "robustcheck.data.numpy:read_npz", doc="numpy archive"),
    ".npy": Declaration(".npy", "robustcheck.data.numpy:read_npy", doc="numpy array"),
    ".h5": Declaration(".h5", "robustcheck.data.hdf5:read_hdf5", doc="HDF5 (h5py)"),
    ".hdf5": Declaration(".hdf5", "robustcheck.data.hdf5:read_hdf5", doc="HDF5 (h5py)"),
    ".parquet": Declaration(
        ".parquet", "robustcheck.data.parquet:read_parquet", doc="Apache Parquet (pyarrow)"
    ),
    ".root": Declaration(".root", "robustcheck.data.root:read_root", doc="ROOT TTree (uproot)"),
}
