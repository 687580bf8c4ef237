#include "dispatch.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "cpu_features.h"

namespace fastsoftmax {
namespace {

struct Candidate {
    const char* name;
    const KernelTable* table;
};

std::vector<Candidate> runnable() {
    std::vector<Candidate> out{{"scalar", &scalar::table}};
#if defined(FASTSOFTMAX_HAVE_X86)
    const CpuFeatures f = detect_cpu_features();
    if (f.avx2_fma) out.push_back({"avx2", &avx2::table});
    if (f.avx512) out.push_back({"avx512", &avx512::table});
#endif
    return out;
}

std::atomic<const KernelTable*> current{nullptr};
std::once_flag chosen;
std::string warning;

void choose_once() {
    const auto options = runnable();
    const KernelTable* pick = options.back().table;
    const char* env = std::getenv("FASTSOFTMAX_ISA");
    if (env && *env) {
        const std::string want(env);
        bool found = (want == "numpy");  // the Python layer takes that one
        for (const auto& c : options)
            if (want == c.name) {
                pick = c.table;
                found = true;
            }
        if (!found)
            warning = "FASTSOFTMAX_ISA=" + want + " is not available on this CPU (choices: " +
                      [&] {
                          std::string s;
                          for (const auto& c : options) s += std::string(c.name) + ", ";
                          return s + "numpy";
                      }() + "); using " + options.back().name;
    }
    current.store(pick);
}

}  // namespace

const KernelTable& active_kernels() {
    std::call_once(chosen, choose_once);
    return *current.load(std::memory_order_acquire);
}

std::vector<std::string> available_isas() {
    std::vector<std::string> names;
    for (const auto& c : runnable()) names.emplace_back(c.name);
    return names;
}

bool select_isa(const std::string& name) {
    std::call_once(chosen, choose_once);
    for (const auto& c : runnable())
        if (name == c.name) {
            current.store(c.table, std::memory_order_release);
            return true;
        }
    return false;
}

std::string selection_warning() {
    std::call_once(chosen, choose_once);
    return warning;
}

}  // namespace fastsoftmax
