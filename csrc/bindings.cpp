// The Python module fastsoftmax._core: checks buffers, releases the GIL, calls the active
// kernel table. Validation of user input lives in the Python layer; the checks here only
// guarantee that a misuse of this private module raises instead of touching bad memory.
#include <pybind11/numpy.h>
#if defined(_OPENMP)
#include <omp.h>
#endif
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <utility>
#include <string>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "layout.h"

namespace py = pybind11;
using namespace fastsoftmax;

namespace {

std::vector<int64_t> shape_of(const py::array& a) {
    return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

std::vector<int64_t> without_axis(std::vector<int64_t> shape, int64_t axis) {
    shape.erase(shape.begin() + axis);
    return shape;
}

void require_c_contiguous(const py::array& a, const char* what) {
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(what) + " must be C-contiguous");
}

int64_t checked_axis(const py::array& a, int64_t axis) {
    if (axis < 0 || axis >= a.ndim()) throw py::value_error("axis out of range");
    return axis;
}

// Equal dtypes (kind, size, native byte order): not object identity, which an unpickled
// dtype does not share.
bool native_order(const py::dtype& d) {
    const char o = d.byteorder();
    const uint16_t probe = 1;
    const bool little = *reinterpret_cast<const uint8_t*>(&probe) == 1;
    return o == '=' || o == '|' || o == (little ? '<' : '>');
}

bool same_dtype(const py::dtype& a, const py::dtype& b) {
    return a.kind() == b.kind() && a.itemsize() == b.itemsize() && native_order(a) && native_order(b);
}

enum class Kind { f32, f64 };

Kind kind_of(const py::array& a, const char* what) {
    if (same_dtype(a.dtype(), py::dtype::of<float>())) return Kind::f32;
    if (same_dtype(a.dtype(), py::dtype::of<double>())) return Kind::f64;
    throw py::type_error(std::string(what) + " must be float32 or float64");
}

std::string shape_text(const std::vector<int64_t>& shape) {
    std::string s = "(";
    for (size_t d = 0; d < shape.size(); ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

enum class Access { read, write };

// Every buffer a kernel touches: C-contiguous (the kernels index it by shape alone), aligned
// to its element size (they load whole elements), writeable if written.
void check_buffer(const py::array& a, const char* name, Access access) {
    require_c_contiguous(a, name);
    const auto address = reinterpret_cast<std::uintptr_t>(a.data());
    if (a.size() != 0 && address % std::uintptr_t(a.itemsize()) != 0)  // empty: nothing is read
        throw py::value_error(std::string(name) + ": buffer is not aligned to its element size (" +
                              std::to_string(a.itemsize()) + " bytes)");
    if (access == Access::write && !a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
}

// ... and of the dtype and shape the kernel expects.
void check_buffer(const py::array& a, const char* name, const py::dtype& dtype, const std::vector<int64_t>& shape,
                  Access access) {
    if (!same_dtype(a.dtype(), dtype) || shape_of(a) != shape)
        throw py::value_error(std::string(name) + " must have dtype " + std::string(py::str(dtype)) + " and shape " +
                              shape_text(shape) + ", got " + std::string(py::str(a.dtype())) + " " +
                              shape_text(shape_of(a)));
    check_buffer(a, name, access);
}

// where= as a Selection; the array must have the input's shape, one byte per entry, and be
// C-contiguous unless the axis is the row axis (then its stride along the axis is 0 or 1).
struct SelectionArg {
    Selection sel;
    const Selection* ptr = nullptr;
};

SelectionArg selection_of(const py::object& where, const std::vector<int64_t>& shape, int64_t axis,
                          const Layout& lay) {
    SelectionArg out;
    if (where.is_none()) return out;
    py::array w = py::reinterpret_borrow<py::array>(where);
    if (w.itemsize() != 1 || (w.dtype().kind() != 'b' && w.dtype().kind() != 'u'))
        throw py::type_error("where must be a boolean array");
    if (shape_of(w) != shape) throw py::value_error("where must have the input's shape");
    if (int64_t(shape.size()) > Selection::max_dims) throw py::value_error("too many dimensions");
    out.sel.data = static_cast<const uint8_t*>(w.data());
    if (lay.inner == 1) {
        out.sel.axis_stride = shape[axis] > 1 ? w.strides()[axis] : 1;
        if (out.sel.axis_stride != 0 && out.sel.axis_stride != 1)
            throw py::value_error("where must have stride 0 or 1 along the axis");
        out.sel.outer_ndim = int(axis);
        for (int64_t d = 0; d < axis; ++d) {
            out.sel.outer_shape[d] = shape[d];
            out.sel.outer_strides[d] = w.strides()[d];
        }
    } else {
        require_c_contiguous(w, "where");
    }
    out.ptr = &out.sel;
    return out;
}

Normaliser normaliser(bool log) { return log ? Normaliser::log_softmax : Normaliser::softmax; }

// The default thread count of the plain calls (threads == 0 there): the OpenMP runtime's
// limit, at most `default_threads_cap` (the CPUs this process may use, set once by the Python
// layer; 0: no cap, as when OMP_NUM_THREADS was set). The same rule as get_num_threads, without
// a round trip through Python on every call.
std::atomic<int> default_threads_cap{0};

int default_threads() {
#if defined(_OPENMP)
    const int n = std::max(1, omp_get_max_threads()), cap = default_threads_cap.load(std::memory_order_relaxed);
    return cap > 0 ? std::min(n, cap) : n;
#else
    return 1;
#endif
}

int checked_threads(int threads) {
    if (threads < 1) throw py::value_error("threads must be at least 1");
    return threads;
}

// f(kernels, T()) with the active table's kernels for T (float or double), the GIL released.
template <class F> void run_typed(Kind k, F&& f) {
    const KernelTable& kt = active_kernels();
    py::gil_scoped_release release;
    if (k == Kind::f32) f(kt.f32, float());
    else f(kt.f64, double());
}

void forward(const py::array& x, py::array& out, int64_t axis, double beta, bool log, const py::object& where,
             int threads) {
    checked_threads(threads);
    const Kind k = kind_of(x, "x");
    check_buffer(x, "x", Access::read);
    check_buffer(out, "out", x.dtype(), shape_of(x), Access::write);
    const Layout lay = layout_of(shape_of(x), checked_axis(x, axis));
    const SelectionArg sel = selection_of(where, shape_of(x), axis, lay);
    const void* src = x.data();
    void* dst = out.mutable_data();
    run_typed(k, [&](const auto& ks, auto t) {
        using T = decltype(t);
        ks.forward(static_cast<const T*>(src), static_cast<T*>(dst), lay, T(beta), normaliser(log), sel.ptr, threads);
    });
}

// 16-bit input (float16 when bf16 is false, else bfloat16) passed as uint16 bits; out is
// uint16 bits of the same format, or float32.
void forward_half(const py::array& x, py::array& out, int64_t axis, double beta, bool log, bool bf16,
                  const py::object& where, int threads) {
    checked_threads(threads);
    if (!same_dtype(x.dtype(), py::dtype::of<uint16_t>())) throw py::type_error("x must be passed as uint16 bits");
    check_buffer(x, "x", Access::read);
    const bool y_float = same_dtype(out.dtype(), py::dtype::of<float>());
    check_buffer(out, "out", y_float ? py::dtype::of<float>() : py::dtype::of<uint16_t>(), shape_of(x), Access::write);
    const Layout lay = layout_of(shape_of(x), checked_axis(x, axis));
    const SelectionArg sel = selection_of(where, shape_of(x), axis, lay);
    const KernelTable& kt = active_kernels();
    const auto* src = static_cast<const uint16_t*>(x.data());
    void* dst = out.mutable_data();
    py::gil_scoped_release release;
    kt.half.forward(src, dst, bf16 ? HalfKind::bf16 : HalfKind::f16, y_float, lay, float(beta), normaliser(log), sel.ptr,
                    threads);
}

void logsumexp_half(const py::array& x, py::array& out, int64_t axis, double beta, bool bf16, const py::object& where,
                    int threads) {
    checked_threads(threads);
    if (!same_dtype(x.dtype(), py::dtype::of<uint16_t>())) throw py::type_error("x must be passed as uint16 bits");
    check_buffer(x, "x", Access::read);
    const Layout lay = layout_of(shape_of(x), checked_axis(x, axis));
    check_buffer(out, "out", py::dtype::of<float>(), without_axis(shape_of(x), axis), Access::write);
    const SelectionArg sel = selection_of(where, shape_of(x), axis, lay);
    const KernelTable& kt = active_kernels();
    const auto* src = static_cast<const uint16_t*>(x.data());
    auto* dst = static_cast<float*>(out.mutable_data());
    py::gil_scoped_release release;
    kt.half.logsumexp(src, dst, bf16 ? HalfKind::bf16 : HalfKind::f16, lay, float(beta), sel.ptr, threads);
}

void logsumexp(const py::array& x, py::array& out, int64_t axis, double beta, const py::object& where, int threads) {
    checked_threads(threads);
    const Kind k = kind_of(x, "x");
    check_buffer(x, "x", Access::read);
    const Layout lay = layout_of(shape_of(x), checked_axis(x, axis));
    check_buffer(out, "out", x.dtype(), without_axis(shape_of(x), axis), Access::write);
    const SelectionArg sel = selection_of(where, shape_of(x), axis, lay);
    const void* src = x.data();
    void* dst = out.mutable_data();
    run_typed(k, [&](const auto& ks, auto t) {
        using T = decltype(t);
        ks.logsumexp(static_cast<const T*>(src), static_cast<T*>(dst), lay, T(beta), sel.ptr, threads);
    });
}

// Per reduction: m (the input's dtype) and S = s_hi + s_lo (float64), shaped like the input
// without the axis.
void check_statistics(const py::array& x, int64_t axis, const py::array& m, const py::array& s_hi,
                      const py::array& s_lo, Access access) {
    const std::vector<int64_t> shape = without_axis(shape_of(x), axis);
    check_buffer(m, "m", x.dtype(), shape, access);
    check_buffer(s_hi, "s_hi", py::dtype::of<double>(), shape, access);
    check_buffer(s_lo, "s_lo", py::dtype::of<double>(), shape, access);
}

void partial_stats(const py::array& x, py::array& m, py::array& s_hi, py::array& s_lo, int64_t axis, double beta,
                   int threads) {
    checked_threads(threads);
    const Kind k = kind_of(x, "x");
    check_buffer(x, "x", Access::read);
    const Layout lay = layout_of(shape_of(x), checked_axis(x, axis));
    check_statistics(x, axis, m, s_hi, s_lo, Access::write);
    const void* src = x.data();
    void* mp = m.mutable_data();
    auto* hp = static_cast<double*>(s_hi.mutable_data());
    auto* lp = static_cast<double*>(s_lo.mutable_data());
    run_typed(k, [&](const auto& ks, auto t) {
        using T = decltype(t);
        ks.partial_stats(static_cast<const T*>(src), static_cast<T*>(mp), hp, lp, lay, T(beta), threads);
    });
}

void normalise(const py::array& x, const py::array& m, const py::array& s_hi, const py::array& s_lo, py::array& out,
               int64_t axis, double beta, bool log, int threads) {
    checked_threads(threads);
    const Kind k = kind_of(x, "x");
    check_buffer(x, "x", Access::read);
    check_buffer(out, "out", x.dtype(), shape_of(x), Access::write);
    const Layout lay = layout_of(shape_of(x), checked_axis(x, axis));
    check_statistics(x, axis, m, s_hi, s_lo, Access::read);
    if (x.data() == out.data()) throw py::value_error("out must not be x");
    const void* src = x.data();
    const void* mp = m.data();
    const auto* hp = static_cast<const double*>(s_hi.data());
    const auto* lp = static_cast<const double*>(s_lo.data());
    void* dst = out.mutable_data();
    run_typed(k, [&](const auto& ks, auto t) {
        using T = decltype(t);
        ks.normalise(static_cast<const T*>(src), static_cast<T*>(dst), lay, T(beta), static_cast<const T*>(mp), hp, lp,
                     normaliser(log), threads);
    });
}

void backward(const py::array& grad, const py::array& y, py::array& out, int64_t axis, double beta,
              bool log, const py::object& where, int threads) {
    checked_threads(threads);
    const Kind k = kind_of(grad, "grad");
    check_buffer(grad, "grad", Access::read);
    check_buffer(y, "y", grad.dtype(), shape_of(grad), Access::read);
    check_buffer(out, "out", grad.dtype(), shape_of(grad), Access::write);
    const Layout lay = layout_of(shape_of(grad), checked_axis(grad, axis));
    const SelectionArg sel = selection_of(where, shape_of(grad), axis, lay);
    const void *g = grad.data(), *s = y.data();
    void* d = out.mutable_data();
    run_typed(k, [&](const auto& ks, auto t) {
        using T = decltype(t);
        ks.backward(static_cast<const T*>(g), static_cast<const T*>(s), static_cast<T*>(d), lay, T(beta),
                    normaliser(log), sel.ptr, threads);
    });
}

template <class T>
// T is the compute type; half: logits (and grad) are 16-bit bits (uint16), everything else T.
void cross_entropy_typed(const py::array& logits, const py::array& target, const py::object& weight,
                         int64_t ignore_index, double smoothing, double scale_nll, double scale_smooth,
                         py::array& nll, const py::object& smooth, const py::object& grad, int threads,
                         int half = -1) {
    const py::dtype compute = py::dtype::of<T>();
    CrossEntropyArgs<T> a;
    a.threads = checked_threads(threads);
    a.rows = logits.shape(0);
    a.classes = logits.shape(1);
    const std::vector<int64_t> per_row{a.rows};
    if (target.ndim() == 1) {
        check_buffer(target, "target", py::dtype::of<int64_t>(), per_row, Access::read);
        a.target_index = static_cast<const int64_t*>(target.data());
        for (int64_t r = 0; r < a.rows; ++r) {
            const int64_t t = a.target_index[r];
            if (t != ignore_index && (t < 0 || t >= a.classes)) throw py::value_error("target out of range");
        }
    } else {
        check_buffer(target, "target", compute, shape_of(logits), Access::read);
        a.target_prob = static_cast<const T*>(target.data());
    }
    if (!weight.is_none()) {
        const py::array w = py::reinterpret_borrow<py::array>(weight);
        check_buffer(w, "weight", compute, {a.classes}, Access::read);
        a.weight = static_cast<const T*>(w.data());
    }
    auto doubles = [&](const py::object& o, const char* what) -> double* {
        if (o.is_none()) return nullptr;
        py::array arr = py::reinterpret_borrow<py::array>(o);
        check_buffer(arr, what, py::dtype::of<double>(), per_row, Access::write);
        return static_cast<double*>(arr.mutable_data());
    };
    a.nll = doubles(nll, "nll");
    a.smooth = doubles(smooth, "smooth");
    void* grad_data = nullptr;
    if (!grad.is_none()) {
        py::array g = py::reinterpret_borrow<py::array>(grad);
        check_buffer(g, "grad", logits.dtype(), shape_of(logits), Access::write);
        grad_data = g.mutable_data();
        if (half < 0) a.grad = static_cast<T*>(grad_data);
    }
    a.ignore_index = ignore_index;
    a.smoothing = smoothing;
    a.scale_nll = scale_nll;
    a.scale_smooth = scale_smooth;
    const KernelTable& kt = active_kernels();
    const void* x = logits.data();
    py::gil_scoped_release release;
    if constexpr (std::is_same<T, float>::value) {
        if (half >= 0)
            kt.half.cross_entropy(static_cast<const uint16_t*>(x), static_cast<uint16_t*>(grad_data),
                                  half ? HalfKind::bf16 : HalfKind::f16, a);
        else
            kt.f32.cross_entropy(static_cast<const float*>(x), a);
    } else {
        kt.f64.cross_entropy(static_cast<const double*>(x), a);
    }
}

void check_logits(const py::array& logits) {
    if (logits.ndim() != 2) throw py::value_error("logits must be 2-D (rows, classes)");
    check_buffer(logits, "logits", Access::read);
}

// float16 (bf16 false) or bfloat16 logits passed as uint16 bits; targets' probabilities and
// weights float32; the gradient written as uint16 bits of the same format.
void cross_entropy_half(const py::array& logits, bool bf16, const py::array& target, const py::object& weight,
                        int64_t ignore_index, double smoothing, double scale_nll, double scale_smooth, py::array& nll,
                        const py::object& smooth, const py::object& grad, int threads) {
    if (!same_dtype(logits.dtype(), py::dtype::of<uint16_t>())) throw py::type_error("logits must be passed as uint16 bits");
    check_logits(logits);
    cross_entropy_typed<float>(logits, target, weight, ignore_index, smoothing, scale_nll, scale_smooth, nll, smooth,
                               grad, threads, bf16 ? 1 : 0);
}

void cross_entropy(const py::array& logits, const py::array& target, const py::object& weight, int64_t ignore_index,
                   double smoothing, double scale_nll, double scale_smooth, py::array& nll, const py::object& smooth,
                   const py::object& grad, int threads) {
    const Kind k = kind_of(logits, "logits");
    check_logits(logits);
    if (k == Kind::f32)
        cross_entropy_typed<float>(logits, target, weight, ignore_index, smoothing, scale_nll, scale_smooth, nll, smooth,
                                   grad, threads);
    else
        cross_entropy_typed<double>(logits, target, weight, ignore_index, smoothing, scale_nll, scale_smooth, nll, smooth,
                                    grad, threads);
}

// ---------------------------------------------------------------------------------------
// One-step entries for the common call: the Python layer's checks cost several microseconds
// a call (more than the kernel on small inputs, and still 10% of a call on a 1 MB input, as
// the kernel's data push the interpreter's own out of cache). They take exact numpy.ndarray
// arguments of float32 or float64 in native order, C-contiguous and aligned, an int axis, a
// finite float beta, and `out` absent, the input itself or a separate array of the result's
// dtype and shape; and return the result. Anything else (None returned, nothing written)
// goes through the Python layer, which also raises every error.

// x as such an array (kind in k), else false.
bool plain_array(py::handle h, Kind& k) {
    if (Py_TYPE(h.ptr()) != reinterpret_cast<PyTypeObject*>(py::detail::npy_api::get().PyArray_Type_)) return false;
    const auto a = py::reinterpret_borrow<py::array>(h);
    if (a.ndim() < 1 || !(a.flags() & py::array::c_style)) return false;
    const py::dtype d = a.dtype();
    // Never destroyed: they would outlive the interpreter at exit.
    static const py::dtype& f32 = *new py::dtype(py::dtype::of<float>());
    static const py::dtype& f64 = *new py::dtype(py::dtype::of<double>());
    if (same_dtype(d, f32)) k = Kind::f32;
    else if (same_dtype(d, f64)) k = Kind::f64;
    else return false;
    return reinterpret_cast<std::uintptr_t>(a.data()) % std::uintptr_t(a.itemsize()) == 0;
}

// The axis (an int, not bool) in [0, ndim), else false.
bool plain_axis(py::handle h, int64_t ndim, int64_t& axis) {
    if (!PyLong_CheckExact(h.ptr())) return false;
    int overflow = 0;
    const long long a = PyLong_AsLongLongAndOverflow(h.ptr(), &overflow);
    if (overflow || a < -ndim || a >= ndim) return false;
    axis = a < 0 ? a + ndim : a;
    return true;
}

// beta (a float, not a subclass) that the kernels of kind k hold exactly as given: 0, or
// within the normal range of the data's type. Beyond it (a float32 beta past 3.4e38 would be
// inf, 0 * inf NaN; one below the smallest normal is flushed to 0) the Python layer forms
// beta * x in a wider type first.
bool plain_beta(py::handle h, Kind k, double& beta) {
    if (!PyFloat_CheckExact(h.ptr())) return false;  // a subclass may convert otherwise
    beta = PyFloat_AS_DOUBLE(h.ptr());
    const double a = std::fabs(beta);
    if (a == 0) return true;
    return k == Kind::f32 ? a >= std::numeric_limits<float>::min() && a <= std::numeric_limits<float>::max()
                          : a >= std::numeric_limits<double>::min() && a <= std::numeric_limits<double>::max();
}

std::pair<std::uintptr_t, std::uintptr_t> extent(const py::array& a) {
    const auto p = reinterpret_cast<std::uintptr_t>(a.data());
    return {p, p + std::uintptr_t(a.nbytes())};
}

bool disjoint(const py::array& a, const py::array& b) {
    const auto ea = extent(a), eb = extent(b);
    return ea.second <= eb.first || eb.second <= ea.first;
}

// `out` for a result of x's dtype and `shape`: a new array when it is None; else itself when
// it is a writeable plain array of that dtype and shape that is one of `same` (written in
// place) or shares no memory with any of `inputs`; else none (the Python layer's case).
bool plain_out(py::handle out, const py::array& x, const std::vector<int64_t>& shape,
               std::initializer_list<const py::array*> inputs, bool may_be_input, py::array& dst) {
    if (out.is_none()) {
        dst = py::array(x.dtype(), shape);
        return true;
    }
    Kind k;
    if (!plain_array(out, k)) return false;
    auto o = py::reinterpret_borrow<py::array>(out);
    if (!same_dtype(o.dtype(), x.dtype()) || shape_of(o) != shape || !o.writeable()) return false;
    for (const py::array* in : inputs)
        if (!(may_be_input && in->data() == o.data()) && !disjoint(*in, o) && o.size() != 0) return false;
    dst = std::move(o);
    return true;
}

py::object forward_plain(py::handle x, py::handle axis, py::handle beta, py::handle out, bool log, int threads) {
    Kind k;
    int64_t ax;
    double b;
    if (threads == 0) threads = default_threads();
    if (threads < 1 || !plain_array(x, k)) return py::none();
    const auto a = py::reinterpret_borrow<py::array>(x);
    py::array dst;
    if (!plain_axis(axis, a.ndim(), ax) || !plain_beta(beta, k, b) || !plain_out(out, a, shape_of(a), {&a}, true, dst))
        return py::none();
    const Layout lay = layout_of(shape_of(a), ax);
    const void* src = a.data();
    void* d = dst.mutable_data();
    run_typed(k, [&](const auto& ks, auto t) {
        using T = decltype(t);
        ks.forward(static_cast<const T*>(src), static_cast<T*>(d), lay, T(b), normaliser(log), nullptr, threads);
    });
    return std::move(dst);
}

py::object backward_plain(py::handle grad, py::handle y, py::handle axis, py::handle beta, py::handle out, bool log,
                          int threads) {
    Kind k, ky;
    int64_t ax;
    double b;
    if (threads == 0) threads = default_threads();
    if (threads < 1 || !plain_array(grad, k) || !plain_array(y, ky) || k != ky) return py::none();
    const auto g = py::reinterpret_borrow<py::array>(grad), s = py::reinterpret_borrow<py::array>(y);
    const std::vector<int64_t> shape = shape_of(g);
    py::array dst;
    if (shape_of(s) != shape || !plain_axis(axis, g.ndim(), ax) || !plain_beta(beta, k, b) ||
        !plain_out(out, g, shape, {&g, &s}, true, dst))
        return py::none();
    const Layout lay = layout_of(shape, ax);
    const void* gp = g.data();
    const void* yp = s.data();
    void* d = dst.mutable_data();
    run_typed(k, [&](const auto& ks, auto t) {
        using T = decltype(t);
        ks.backward(static_cast<const T*>(gp), static_cast<const T*>(yp), static_cast<T*>(d), lay, T(b), normaliser(log),
                    nullptr, threads);
    });
    return std::move(dst);
}

py::object logsumexp_plain(py::handle x, py::handle axis, bool keepdims, py::handle beta, py::handle out, int threads) {
    Kind k;
    int64_t ax;
    double b;
    if (threads == 0) threads = default_threads();
    if (threads < 1 || !plain_array(x, k)) return py::none();
    const auto a = py::reinterpret_borrow<py::array>(x);
    if (!plain_axis(axis, a.ndim(), ax) || !plain_beta(beta, k, b)) return py::none();
    std::vector<int64_t> shape = shape_of(a);
    if (keepdims) shape[size_t(ax)] = 1; else shape.erase(shape.begin() + ax);
    py::array dst;
    if (!plain_out(out, a, shape, {&a}, false, dst)) return py::none();
    const Layout lay = layout_of(shape_of(a), ax);
    const void* src = a.data();
    void* d = dst.mutable_data();
    run_typed(k, [&](const auto& ks, auto t) {
        using T = decltype(t);
        ks.logsumexp(static_cast<const T*>(src), static_cast<T*>(d), lay, T(b), nullptr, threads);
    });
    return std::move(dst);
}

#define FS_STR2(x) #x
#define FS_STR(x) FS_STR2(x)

py::dict build_info() {
    py::dict d;
#if defined(__clang__)
    d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    d["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
    d["compiler"] = std::string("msvc ") + FS_STR(_MSC_VER);
#else
    d["compiler"] = "unknown";
#endif
    d["build_type"] = FASTSOFTMAX_BUILD_TYPE;
    py::dict flags;
    flags["scalar"] = FASTSOFTMAX_FLAGS_SCALAR;
#if defined(FASTSOFTMAX_HAVE_X86)
    flags["avx2"] = FASTSOFTMAX_FLAGS_AVX2;
    flags["avx512"] = FASTSOFTMAX_FLAGS_AVX512;
#endif
    d["flags"] = flags;
    return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastsoftmax kernels (private: use the fastsoftmax package)";
    m.def("forward", &forward, py::arg("x"), py::arg("out"), py::arg("axis"), py::arg("beta"), py::arg("log"),
          py::arg("where") = py::none(), py::arg("threads") = 1);
    m.def("logsumexp", &logsumexp, py::arg("x"), py::arg("out"), py::arg("axis"), py::arg("beta"),
          py::arg("where") = py::none(), py::arg("threads") = 1);
    m.def("backward", &backward, py::arg("grad"), py::arg("y"), py::arg("out"), py::arg("axis"), py::arg("beta"),
          py::arg("log"), py::arg("where") = py::none(), py::arg("threads") = 1);
    m.def("forward_plain", &forward_plain, py::arg("x"), py::arg("axis"), py::arg("beta"), py::arg("out"),
          py::arg("log"), py::arg("threads"));
    m.def("backward_plain", &backward_plain, py::arg("grad"), py::arg("y"), py::arg("axis"), py::arg("beta"),
          py::arg("out"), py::arg("log"), py::arg("threads"));
    m.def("logsumexp_plain", &logsumexp_plain, py::arg("x"), py::arg("axis"), py::arg("keepdims"), py::arg("beta"),
          py::arg("out"), py::arg("threads"));
    m.def("partial_stats", &partial_stats, py::arg("x"), py::arg("m"), py::arg("s_hi"), py::arg("s_lo"),
          py::arg("axis"), py::arg("beta") = 1.0, py::arg("threads") = 1);
    m.def("normalise", &normalise, py::arg("x"), py::arg("m"), py::arg("s_hi"), py::arg("s_lo"), py::arg("out"),
          py::arg("axis"), py::arg("beta") = 1.0, py::arg("log") = false, py::arg("threads") = 1);
    m.def("forward_half", &forward_half, py::arg("x"), py::arg("out"), py::arg("axis"), py::arg("beta"),
          py::arg("log"), py::arg("bf16"), py::arg("where") = py::none(), py::arg("threads") = 1);
    m.def("logsumexp_half", &logsumexp_half, py::arg("x"), py::arg("out"), py::arg("axis"), py::arg("beta"),
          py::arg("bf16"), py::arg("where") = py::none(), py::arg("threads") = 1);
    m.def("cross_entropy", &cross_entropy, py::arg("logits"), py::arg("target"), py::arg("weight"),
          py::arg("ignore_index"), py::arg("smoothing"), py::arg("scale_nll"), py::arg("scale_smooth"), py::arg("nll"),
          py::arg("smooth"), py::arg("grad"), py::arg("threads") = 1);
    m.def("cross_entropy_half", &cross_entropy_half, py::arg("logits"), py::arg("bf16"), py::arg("target"),
          py::arg("weight"), py::arg("ignore_index"), py::arg("smoothing"), py::arg("scale_nll"),
          py::arg("scale_smooth"), py::arg("nll"), py::arg("smooth"), py::arg("grad"), py::arg("threads") = 1);
    m.def("openmp", [] {
#if defined(_OPENMP)
        return true;
#else
        return false;
#endif
    });
    // The OpenMP runtime's current thread limit (OMP_NUM_THREADS, omp_set_num_threads as
    // threadpoolctl calls it), or 1 without OpenMP.
    m.def("omp_max_threads", [] {
#if defined(_OPENMP)
        return omp_get_max_threads();
#else
        return 1;
#endif
    });
    m.def("set_default_threads_cap", [](int cap) { default_threads_cap.store(std::max(0, cap)); }, py::arg("cap"));
    m.def("default_threads", &default_threads);
    m.def("isa", [] { return std::string(active_kernels().name); });
    m.def("available_isas", &available_isas);
    m.def("select_isa", &select_isa, py::arg("name"));
    m.def("selection_warning", &selection_warning);
    m.def("build_info", &build_info);
}
