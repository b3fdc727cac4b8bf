"""ANSI C12.22 (ACSE + EPSEM, EAX' protection) and a C12.19 table subset."""
