//! Label types: enums drawn from a fixed set, each with its label string,
//! for counters and logs ([`crate::stats`], [`crate::eio::EioRefusal`]).

/// Declares a label enum: its values, `ALL` in counter order, `N`, and
/// `as_str`.
macro_rules! labels {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v,)+ }

        impl $name {
            /// Every value, in the order of the counters' arrays.
            pub const ALL: &'static [$name] = &[$($name::$v,)+];
            /// How many values there are.
            pub const N: usize = Self::ALL.len();
            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)+ }
            }
        }
    };
}
