//! Small driver plugins written in the WebAssembly text format: a component
//! that exports `edge-dmi:driver/driver@0.1.0` by hand (canonical ABI
//! layouts below), whose `read-batch` body each test chooses.
//!
//! Layouts (canonical ABI, 32-bit): `value` is 16 bytes (case byte at 0,
//! payload at 8); `result<value, driver-error>` is 32 bytes (case byte at 0,
//! payload at 8), so an `ok(int 42)` element has 0 at +0, 1 (`int`) at +8
//! and the i64 at +16. Functions returning more than one flat value return a
//! pointer to their result. `prepare` answers handle 0 for every address;
//! `read` answers what `read-batch` answers for one address.

/// `read-batch` that answers `ok(int VALUE)` for every address.
pub fn answering(value: i64) -> String {
    format!(
        r#"(func $read_batch (export "read-batch") (param i32 i32) (result i32)
             (call $ok_list (local.get 1) (i64.const {value})))"#
    )
}

/// `read-batch` that never returns.
pub const LOOP_FOREVER: &str = r#"(func $read_batch (export "read-batch") (param i32 i32) (result i32)
    (loop $l (br $l))
    (unreachable))"#;

/// `read-batch` that traps at once.
pub const TRAP: &str = r#"(func $read_batch (export "read-batch") (param i32 i32) (result i32)
    (unreachable))"#;

/// `read-batch` that grows its memory without bound.
pub const GROW_FOREVER: &str = r#"(func $read_batch (export "read-batch") (param i32 i32) (result i32)
    (loop $l (drop (memory.grow (i32.const 16))) (br $l))
    (unreachable))"#;

/// `read-batch` whose first value has case 9 (`value` has 5 cases).
pub const BAD_VARIANT: &str = r#"(func $read_batch (export "read-batch") (param i32 i32) (result i32)
    (local $r i32)
    (local.set $r (call $ok_list (local.get 1) (i64.const 1)))
    (i32.store8 offset=8 (i32.load (local.get $r)) (i32.const 9))
    (local.get $r))"#;

/// `read-batch` whose first value is `text` with bytes that are not UTF-8.
pub const BAD_UTF8: &str = r#"(func $read_batch (export "read-batch") (param i32 i32) (result i32)
    (local $r i32) (local $e i32)
    (local.set $r (call $ok_list (local.get 1) (i64.const 1)))
    (local.set $e (i32.load (local.get $r)))
    (i32.store8 offset=8 (local.get $e) (i32.const 3))
    (i32.store offset=16 (local.get $e) (i32.const 512))
    (i32.store offset=20 (local.get $e) (i32.const 2))
    (local.get $r))"#;

/// `read-batch` whose list points past the end of memory.
pub const OUT_OF_BOUNDS: &str = r#"(func $read_batch (export "read-batch") (param i32 i32) (result i32)
    (local $r i32)
    (local.set $r (call $ok_list (local.get 1) (i64.const 1)))
    (i32.store (local.get $r) (i32.const 0x7ffffff0))
    (local.get $r))"#;

/// `read-batch` whose first value is the float NaN.
pub const NAN: &str = r#"(func $read_batch (export "read-batch") (param i32 i32) (result i32)
    (local $r i32) (local $e i32)
    (local.set $r (call $ok_list (local.get 1) (i64.const 1)))
    (local.set $e (i32.load (local.get $r)))
    (i32.store8 offset=8 (local.get $e) (i32.const 2))
    (f64.store offset=16 (local.get $e) (f64.const nan))
    (local.get $r))"#;

/// `read-batch` that answers no results at all.
pub const NO_RESULTS: &str = r#"(func $read_batch (export "read-batch") (param i32 i32) (result i32)
    (local $r i32)
    (local.set $r (call $ok_list (local.get 1) (i64.const 1)))
    (i32.store offset=4 (local.get $r) (i32.const 0))
    (local.get $r))"#;

/// A component with `read_batch` (a core function exporting "read-batch")
/// and the other exports answering `ok`.
pub fn driver(read_batch: &str) -> String {
    format!(
        r#"(component
  (core module $m
    (memory (export "memory") 2)
    (data (i32.const 512) "\ff\fe")
    (global $heap (mut i32) (i32.const 1024))
    ;; Bump allocator that starts again from the bottom: good enough for
    ;; tests that hold nothing across calls.
    (func $alloc (param $size i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 120000))
        (then (local.set $p (i32.const 1024))))
      (global.set $heap (i32.add (local.get $p) (local.get $size)))
      (local.get $p))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (call $alloc (local.get 3)))
    ;; A list of $n results `ok(int $v)`; returns the pointer to (ptr, len).
    (func $ok_list (param $n i32) (param $v i64) (result i32)
      (local $p i32) (local $i i32) (local $e i32)
      (local.set $p (call $alloc (i32.mul (local.get $n) (i32.const 32))))
      (block $done
        (loop $l
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $e (i32.add (local.get $p) (i32.mul (local.get $i) (i32.const 32))))
          (i32.store8 (local.get $e) (i32.const 0))
          (i32.store8 offset=8 (local.get $e) (i32.const 1))
          (i64.store offset=16 (local.get $e) (local.get $v))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l)))
      (i32.store (i32.const 128) (local.get $p))
      (i32.store (i32.const 132) (local.get $n))
      (i32.const 128))
    (func (export "connect") (param i32 i32) (result i32)
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.const 16))
    ;; Every address is handle 0.
    (func (export "prepare") (param i32 i32) (result i32)
      (i32.store8 (i32.const 256) (i32.const 0))
      (i32.store (i32.const 264) (i32.const 0))
      (i32.const 256))
    ;; One read answers what a batch of one would (same 32-byte layout).
    (func (export "read") (param i32) (result i32)
      (i32.load (call $read_batch (i32.const 0) (i32.const 1))))
    {read_batch}
    (func (export "write") (param i32 i32 i64 i32) (result i32)
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.const 16))
    (func (export "state") (result i32) (i32.const 0))
    (func (export "disconnect"))
  )
  (core instance $i (instantiate $m))
  (type $value (variant (case "boolean" bool) (case "int" s64) (case "float" f64)
                        (case "text" string) (case "bytes" (list u8))))
  (type $fault (record (field "code" (option u32)) (field "message" string)))
  (type $error (variant (case "device" $fault) (case "transport" string) (case "timeout" u64)
                        (case "protocol" string) (case "config" string) (case "value" string)))
  (type $state (enum "online" "offline" "unhealthy" "unknown"))
  (func $connect (param "config" string) (result (result (error $error)))
    (canon lift (core func $i "connect") (memory (core memory $i "memory"))
      (realloc (core func $i "cabi_realloc"))))
  (func $prepare (param "address" string) (result (result u32 (error $error)))
    (canon lift (core func $i "prepare") (memory (core memory $i "memory"))
      (realloc (core func $i "cabi_realloc"))))
  (func $read (param "address" u32) (result (result $value (error $error)))
    (canon lift (core func $i "read") (memory (core memory $i "memory"))
      (realloc (core func $i "cabi_realloc"))))
  (func $read-batch (param "addresses" (list u32)) (result (list (result $value (error $error))))
    (canon lift (core func $i "read-batch") (memory (core memory $i "memory"))
      (realloc (core func $i "cabi_realloc"))))
  (func $write (param "address" u32) (param "value" $value) (result (result (error $error)))
    (canon lift (core func $i "write") (memory (core memory $i "memory"))
      (realloc (core func $i "cabi_realloc"))))
  (func $state-fn (result $state) (canon lift (core func $i "state")))
  (func $disconnect (canon lift (core func $i "disconnect")))
  (instance $driver
    (export "value" (type $value))
    (export "device-fault" (type $fault))
    (export "driver-error" (type $error))
    (export "device-state" (type $state))
    (export "connect" (func $connect))
    (export "prepare" (func $prepare))
    (export "read" (func $read))
    (export "read-batch" (func $read-batch))
    (export "write" (func $write))
    (export "state" (func $state-fn))
    (export "disconnect" (func $disconnect)))
  (export "edge-dmi:driver/driver@0.1.0" (instance $driver))
)"#
    )
}

/// A component that imports a host interface nobody provides (a file API)
/// and exports nothing: it must fail to load, naming the import.
pub const IMPORTS_FILES: &str = r#"(component
  (import "evil:host/files" (instance
    (export "read-file" (func (param "path" string) (result (list u8))))))
)"#;
