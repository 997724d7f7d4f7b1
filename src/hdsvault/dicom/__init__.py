"""The DIMSE face (pynetdicom): C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET SCP.

Only parses, identifies the peer by its calling AE title (``[[dicom.peers]]`` maps each to a
tenant) and calls the imaging service; it never touches storage itself.
"""
