"""`symscale md`: not written yet (placeholder while the package is built)."""


def add_parser(subparsers):
    p = subparsers.add_parser("md", help="(not available yet)")
    p.set_defaults(func=lambda args: (_ for _ in ()).throw(NotImplementedError("md")))
