"""Stand-in CANN libraries, so that MindSpore's Ascend plugin loads on a machine without CANN for a dry run.

    built = build(Path("/tmp/cann-standins"))   # needs g++; python -m vit_ms.cann_standins OUTDIR
    print(built.exports())                       # the two variables to export

MindSpore's PyPI wheel ships its Ascend plugin (mindspore/lib/plugin/libmindspore_ascend.so.2), which links
against CANN's libraries. For a dry run (MS_SIMULATION_LEVEL=1: the device is mocked, see
`vit_ms.tools.dryrun`) nothing in them computes, so each stand-in defines the functions MindSpore 2.10.0 needs
(cann_symbols/link.txt: resolved when the plugin loads; cann_symbols/dlsym.txt: looked up at run time), nearly all
returning 0 (CANN's "success"); the few whose results MindSpore reads give it real objects. One C++ file is
compiled under each library name:

    OUTDIR/latest/lib64/lib*.so     the 15 libraries (MindSpore finds its "CANN home" from the folder of the
                                    library that defines aclrtMalloc: its path must contain 'latest' or 'cann')
    OUTDIR/py/hccl/                 the small Python package MindSpore imports for several ranks

A newer MindSpore may ask for a function that is not listed: its error names it; add it to the list.
"""
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

SYMBOLS = Path(__file__).with_name("cann_symbols")
LIBRARIES = ("ascendcl", "ge_runner", "graph", "msprofiler", "hccl", "runtime", "platform", "c_sec", "nnopbase",
             "ascend_hal", "acl_op_compiler", "acl_tdt_channel", "acl_tdt_queue", "opapi", "profapi")
SOC_VARIABLE = "FAKE_CANN_SOC"  # what aclrtGetSocName returns (MindSpore's dry run reports its own chip anyway)

# The functions whose results MindSpore uses, by their mangled names: (return type, parameters, body).
_REAL = {
    "_ZN2ge13StatusFactory8InstanceEv":  # ge::StatusFactory::Instance(): a status-message table
        ("void*", "", "static auto* table = new std::map<uint32_t, std::string>(); return table;"),
    "_ZN2ge15OperatorFactory14CreateOperatorEPKcS2_":  # returns a ge::Operator by value into `out`
        ("void*", "void* out, const char*, const char*", "return new (out) standin::Operator();"),
    "_ZN2ge15OperatorFactory14CreateOperatorERKSsS2_":
        ("void*", "void* out, const void*, const void*", "return new (out) standin::Operator();"),
    "_ZNK2ge8Operator7GetNameEv": ("void*", "void* out, const void*", 'return new (out) std::string("standin");'),
    "_ZNK2ge8Operator9GetOpTypeEv": ("void*", "void* out, const void*", 'return new (out) std::string("StandIn");'),
    "_ZNK2ge5Shape7GetDimsEv": ("void*", "void* out, const void*", "return new (out) std::vector<int64_t>();"),
    "aclrtGetSocName": ("const char*", "", f'const char* soc = getenv("{SOC_VARIABLE}"); '
                                           f'return soc ? soc : "Ascend910B1";'),
}
_PRELUDE = """#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>
// ge::Operator's size (24 bytes): a vtable and a shared pointer
namespace standin { struct Operator { virtual ~Operator() = default; std::shared_ptr<void> impl; }; }
extern "C" {
"""


@dataclass(frozen=True)
class StandIns:
    """Built stand-ins: the library folder (for LD_LIBRARY_PATH) and the Python folder (for PYTHONPATH)."""
    lib_dir: Path
    py_dir: Path

    def environ(self, base: Dict[str, str]) -> Dict[str, str]:
        """`base` with both folders put in front of LD_LIBRARY_PATH and PYTHONPATH."""
        def front(key: str, folder: Path) -> str:
            return ":".join([str(folder)] + ([base[key]] if base.get(key) else []))
        return {**base, "LD_LIBRARY_PATH": front("LD_LIBRARY_PATH", self.lib_dir),
                "PYTHONPATH": front("PYTHONPATH", self.py_dir)}

    def exports(self) -> str:
        return (f"export LD_LIBRARY_PATH={self.lib_dir}:$LD_LIBRARY_PATH PYTHONPATH={self.py_dir}:$PYTHONPATH")

    @classmethod
    def at(cls, out_dir: Path) -> "StandIns":
        out_dir = Path(out_dir).resolve()
        return cls(out_dir / "latest" / "lib64", out_dir / "py")

    def complete(self) -> bool:
        return all((self.lib_dir / f"lib{name}.so").is_file() for name in LIBRARIES) and \
            (self.py_dir / "hccl" / "__init__.py").is_file()


def symbols() -> List[str]:
    names = {line.strip() for name in ("link.txt", "dlsym.txt")
             for line in (SYMBOLS / name).read_text(encoding="utf-8").splitlines()}
    return sorted(names - {""})


def stub_source(names: Sequence[str]) -> str:
    """The C++ source: one extern "C" definition per name (the mangled C++ names link by their symbol)."""
    lines = [_PRELUDE]
    for name in names:
        ret, params, body = _REAL.get(name, ("long", "void", "return 0;"))
        lines.append(f"{ret} {name}({params}) {{ {body} }}")
    return "\n".join(lines) + "\n}\n"


def compiler() -> Optional[str]:
    return shutil.which("g++")


def build(out_dir: Path) -> StandIns:
    """Compile the stand-ins into `out_dir` (seconds); RuntimeError naming what failed."""
    out = StandIns.at(out_dir)
    gxx = compiler()
    if gxx is None:
        raise RuntimeError("g++ is not installed; the stand-in CANN libraries are compiled with it "
                           "(Debian/Ubuntu: apt-get install g++)")
    out.lib_dir.mkdir(parents=True, exist_ok=True)
    (out.py_dir / "hccl").mkdir(parents=True, exist_ok=True)
    source = out.lib_dir.parent.parent / "cann_standins.cc"
    source.write_text(stub_source(symbols()), encoding="utf-8")
    obj = source.with_suffix(".o")  # compiled once, linked under each name
    _compile([gxx, "-c", "-fPIC", "-O1", "-D_GLIBCXX_USE_CXX11_ABI=0", "-o", str(obj), str(source)])
    for name in LIBRARIES:
        lib = f"lib{name}.so"
        _compile([gxx, "-shared", f"-Wl,-soname,{lib}", "-o", str(out.lib_dir / lib), str(obj)])
    (out.py_dir / "hccl" / "__init__.py").write_text("", encoding="utf-8")
    (out.py_dir / "hccl" / "sys_version.py").write_text('__sys_version__ = "8.0.0"\n', encoding="utf-8")
    return out


def _compile(command: List[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed:\n{done.stderr[-2000:]}")
