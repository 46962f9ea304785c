"""The HDF5 attribute reader the analysis scripts share (they import it from their own folder)."""


def attr(f, name, default=None):
    """Attribute `name` of an h5py object, bytes decoded to str; `default` when it is absent."""
    if name not in f.attrs:
        return default
    v = f.attrs[name]
    return v.decode() if isinstance(v, bytes) else v
